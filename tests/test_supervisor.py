"""``make run``'s supervisor: a killed program comes back at once, a crash loop backs off."""

from __future__ import annotations

import os
import signal
import sys
import time

from cli.dev import Program

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def _wait_exit(program: Program) -> None:
    deadline = time.monotonic() + 10
    while program.process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_program_killed_by_a_signal_restarts_at_once_every_time():
    program = Program("sleeper", SLEEPER, dict(os.environ), settle_seconds=0.3)
    program.start()
    try:
        for kill in range(6):
            time.sleep(0.35)  # it ran past settle_seconds: a healthy program, killed
            pid = program.process.pid
            os.kill(pid, signal.SIGKILL)
            _wait_exit(program)
            program.check()
            assert program.process.pid != pid, f"kill {kill + 1}: not restarted at once"
            assert program.backoff == 1.0
        assert program.restarts == 6
    finally:
        program.process.kill()
        program.process.wait()


def test_a_program_that_crashes_on_start_backs_off():
    program = Program("crasher", CRASHER, dict(os.environ), settle_seconds=5)
    program.start()
    delays = []
    for _ in range(6):
        _wait_exit(program)
        now = time.monotonic()
        program.check(now)  # schedules the restart
        delays.append(round(program.next_start - now, 3))
        program.check(program.next_start)  # ... and makes it when that time comes
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    _wait_exit(program)


def test_signal_deaths_right_after_each_start_back_off_too():
    killer = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    program = Program("suicidal", killer, dict(os.environ), settle_seconds=5)
    program.start()
    delays = []
    for _ in range(5):
        _wait_exit(program)
        now = time.monotonic()
        program.check(now)
        delays.append(round(max(program.next_start - now, 0.0), 3))
        if program.next_start:
            program.check(program.next_start)
    # the first few are taken for kills from outside; then it is a crash loop
    assert delays[: Program.QUICK_SIGNAL_DEATHS] == [0.0] * Program.QUICK_SIGNAL_DEATHS
    assert delays[Program.QUICK_SIGNAL_DEATHS :] == [1.0, 2.0]
    _wait_exit(program)
