"""`benchmarks/service_bench.py --quick` runs the real stack end to end and reports every row.

Only that the benchmark works is checked here (it exits 0, prints each row, writes a finite
positive figure for each): its speed targets are measured by the benchmark, not by tests.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.support.stack import ROOT

ROWS = [
    "xor_short",
    "xor_long",
    "job_runtime",
    "tiny_p50",
    "tiny_p99",
    "post_p50",
    "post_rate",
    "get_job",
    "drain_20",
    "submit_20",
    "drain_50",
    "submit_50",
    "scaling_1",
    "scaling_2",
]


def test_quick_benchmark_on_the_embedded_stack_reports_every_row(tmp_path):
    figures = tmp_path / "figures.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "service_bench.py"), "--quick",
            "--stacks", "embedded", "--json", str(figures)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    assert "## machine" in done.stdout
    assert "## embedded" in done.stdout
    rows = json.loads(figures.read_text())["stacks"]["embedded"]["rows"]
    assert sorted(rows) == sorted(ROWS)
    for key, row in rows.items():
        assert f"| {row['what']} |" in done.stdout, key
        for name in ("service", "baseline", "ratio"):
            value = row[name]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, name)
    # the drains say what each part of the stack spent on a job (from /proc)
    cpu = rows["drain_50"]["notes"]["cpu_ms_per_job"]
    assert min(cpu["client"], cpu["API"], cpu["worker"], cpu["Redis"]) > 0, cpu
    assert "CPU per job (ms)" in done.stdout
