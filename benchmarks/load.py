"""HTTP load for the benchmarks' throughput rows: successful requests per second with
CONNECTIONS keep-alive connections, from ``wrk`` when it is installed (Lua scripts add the
body and the token), else from processes of ours with ``http.client``. The reason to change
is how the load is made.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench_stack import split

CONNECTIONS = 8


@dataclass(frozen=True)
class Load:
    method: str
    url: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def load_rate(load: Load, seconds: float, tool: str, workdir: Path) -> dict:
    """Successful requests per second with CONNECTIONS connections for ``seconds``."""
    if tool == "wrk":
        return wrk_rate(load, seconds, workdir)
    return python_rate(load, seconds)


def wrk_script(load: Load, workdir: Path) -> Path:
    script = workdir / f"wrk-{uuid.uuid4().hex[:6]}.lua"
    lines = [f'wrk.method = "{load.method}"']
    if load.body:
        body = workdir / f"{script.stem}.body"
        body.write_bytes(load.body)
        lines += [f'local f = io.open("{body}", "rb")', "wrk.body = f:read('*a')", "f:close()"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in load.headers]
    script.write_text("\n".join(lines) + "\n")
    return script


def wrk_rate(load: Load, seconds: float, workdir: Path) -> dict:
    threads = min(CONNECTIONS, os.cpu_count() or 1)
    argv = ["wrk", "-t", str(threads), "-c", str(CONNECTIONS), "-d", f"{seconds:g}s",
            "--timeout", "10s", "-s", str(wrk_script(load, workdir)), load.url]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    text = done.stdout
    total = int(re.search(r"(\d+) requests in", text).group(1))
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    bad = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors:.*", text)
    if total == 0 or bad > total * 0.01:
        raise RuntimeError(f"wrk: {bad} of {total} answers were not 2xx:\n{text}")
    return {
        "rate": rate * (total - bad) / total,
        "requests": total,
        "not_2xx": bad,
        "socket_errors": errors.group(0) if errors else "",
    }


def python_rate(load: Load, seconds: float) -> dict:
    """The load from processes of ours: they start their clocks together once all are up."""
    context = multiprocessing.get_context("spawn")
    ready, results, start_at = context.Queue(), context.Queue(), context.Value("d", 0.0)
    go = context.Event()
    processes = min(CONNECTIONS, os.cpu_count() or 1)
    workers = [
        context.Process(
            target=load_process, args=(load, n, seconds, ready, go, start_at, results), daemon=True
        )
        for n in split(CONNECTIONS, processes)
    ]
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=120)
        start_at.value = time.time() + 0.1
        go.set()
        counts = [results.get(timeout=seconds + 60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    ok, bad = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if ok == 0 or bad > (ok + bad) * 0.01:
        raise RuntimeError(f"load: {bad} of {ok + bad} answers were not 2xx")
    return {"rate": ok / seconds, "requests": ok + bad, "not_2xx": bad}


def load_process(load: Load, connections: int, seconds: float, ready, go, start_at, results):
    counts = [[0, 0] for _ in range(connections)]
    ready.put(os.getpid())
    if not go.wait(timeout=120):
        return
    begin, end = start_at.value, start_at.value + seconds
    threads = [threading.Thread(target=load_connection, args=(load, begin, end, c)) for c in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    results.put((sum(c[0] for c in counts), sum(c[1] for c in counts)))


def load_connection(load: Load, begin: float, end: float, count: list[int]) -> None:
    """One keep-alive connection (http.client reconnects when the server closes it); a
    failed request counts as a bad answer and opens a new connection."""
    url = urlsplit(load.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = dict(load.headers)
    time.sleep(max(begin - time.time(), 0))
    while time.time() < end:
        try:
            connection.request(load.method, url.path, body=load.body or None, headers=headers)
            response = connection.getresponse()
            response.read()
            good = 200 <= response.status < 300
        except (OSError, http.client.HTTPException):
            connection.close()
            good = False
        if time.time() <= end:
            count[0 if good else 1] += 1
    connection.close()


def choose_tool(asked: str) -> str:
    if asked == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if asked == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--load wrk: wrk is not installed (apt-get install -y wrk)")
    return asked
