"""py-spy on the running stack: where the service's processes spend their CPU during a row.

    python benchmarks/service_bench.py --stacks postgresql --profile DIR

A profiled row records the API's gunicorn and the Celery worker, each with its children,
with ``py-spy record --gil --format raw``: only the thread holding the interpreter is
sampled, so the samples are CPU time, not waits. Each recording is written as
DIR/<stack>-<row>-<part>.txt, folded stacks (one line a stack and its sample count) that
flame-graph tools read (speedscope, inferno, flamegraph.pl); ``summary`` charges each sample
to the deepest function of the service's own code on its stack and to the library that
was running, and the report prints the largest shares. py-spy reads the processes from
outside and changes nothing in them, but it takes CPU of its own: a profiled run's figures
are not the benchmark's, so measure and profile in separate runs. It needs py-spy (a dev
dependency) and the right to trace the processes (root, or kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

#: the service's own packages, as py-spy names their files
OWN = ("api/", "backprop/", "core/", "messaging/", "service/", "store/", "tuning/", "web/",
       "worker/")  # fmt: skip
SAMPLES_PER_SECOND = 200
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable: on PATH, or beside this interpreter (a virtualenv's bin)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


@contextmanager
def recording(targets: dict[str, int], directory: Path, name: str):
    """Record each ``targets`` process (part name: pid) with its children while the block
    runs. Yields a dict that holds, after the block, each part's ``summary``."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    running = {}
    for part, pid in targets.items():
        path = directory / f"{name}-{part}.txt"
        argv = [executable, "record", "--pid", str(pid), "--subprocesses", "--gil",
                "--rate", str(SAMPLES_PER_SECOND), "--format", "raw", "--output", str(path),
                "--nonblocking"]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        running[part] = (process, path)
    found: dict[str, dict] = {}
    try:
        yield found
    finally:
        for part, (process, path) in running.items():
            process.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            try:
                _, errors = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, errors = process.communicate()
            if not path.exists():
                raise RuntimeError(f"py-spy wrote no profile of {part}: {errors.decode()[-500:]}")
            found[part] = summary(path.read_text())


def summary(folded: str, count: int = 8) -> dict:
    """From folded stacks: the samples; ``own``, the share of each function of the
    service's own code that was the deepest of its code on the stack when sampled (what it
    did itself or called a library for: the service's part that the sample is charged to),
    with "outside" the samples taken where none of its code was running (gunicorn's HTTP,
    Celery's loop); and ``libraries``, the share of each library whose code was running.
    Largest first."""
    total, own, libraries = 0, Counter(), Counter()
    for line in folded.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = [_function(frame) for frame in stack.split(";")]
        mine = [function for function, file in frames if file.startswith(OWN)]
        total += int(samples)
        own[mine[-1] if mine else "outside"] += int(samples)
        libraries[_library(frames[-1][1])] += int(samples)
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "own": [(share(n), function) for function, n in own.most_common(count)],
        "libraries": [(share(n), name) for name, n in libraries.most_common(count)],
    }


def _function(frame: str) -> tuple[str, str]:
    """("function (file)", file) of a py-spy frame "function (file:line)"."""
    matched = _FRAME.match(frame)
    if matched is None:  # a process's own line ("process 12: ...") or a native frame
        return frame, ""
    return f"{matched['function']} ({matched['file']})", matched["file"]


def _library(file: str) -> str:
    """Who owns a file: "ours", a top-level package, or "python" for the standard library."""
    if file.startswith(OWN):
        return "ours"
    head, _, rest = file.partition("/")
    return head if rest else "python"


def lines(name: str, found: dict[str, dict]) -> list[str]:
    """The report's lines of one row's profile."""
    out = []
    for part, result in found.items():
        if not result["samples"]:
            continue
        own = ", ".join(f"{function} {pct:g}%" for pct, function in result["own"][:6])
        libraries = ", ".join(f"{library} {pct:g}%" for pct, library in result["libraries"])
        out.append(f"profile of {name}, {part} ({result['samples']} samples): running "
                   f"{libraries}; charged to {own}")  # fmt: skip
    return out
