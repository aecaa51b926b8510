"""schemathesis from outside against the live service (gunicorn, a Celery worker, Redis,
PostgreSQL), as a third party would run it: ``st run --checks all``, every phase (examples,
coverage, fuzzing, stateful along the document's links), positive and negative data.

One check is swapped for itself with the contract's one exception (see
``schemathesis_hooks``): positive data acceptance, which lets through a 422 whose errors
each name a rule the operation lists in its ``x-rules``. The run must end with no failure
of any check and no error; its figures print at the end of the test session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.stack import ROOT

MAX_SECONDS = int(os.environ.get("CONTRACT_FUZZ_SECONDS", "50"))
SEED = os.environ.get("CONTRACT_FUZZ_SEED", "20261202")
FIGURES: dict = {}
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failure_of_any_check(live, tmp_path):
    report = tmp_path / "report.json"
    excuses = tmp_path / "excused.log"
    argv = [
        str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG),
        "run", f"{live.base}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--header", f"Authorization: Bearer {live.token('fuzzer')}",
        "--max-time", str(MAX_SECONDS), "--seed", SEED,
        "--continue-on-failure", "--no-shrink", "--max-failures", "20",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="tests.contract.schemathesis_hooks",
        PYTHONPATH=str(ROOT),
        CONTRACT_EXCUSES=str(excuses),
        NO_COLOR="1",
    )
    done = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=MAX_SECONDS + 240
    )
    output = done.stdout + done.stderr
    (tmp_path / "st.out").write_text(output)
    failures = output.split("= FAILURES =", 1)[-1].split("= SUMMARY =", 1)[0][:12000]
    result = json.loads(report.read_text())
    excused = excuses.read_text().splitlines() if excuses.exists() else []
    scenarios = re.search(r"Scenarios:\s+(\d+)", output)
    links = re.search(r"API Links:\s+(\d+) covered / \d+ selected / (\d+) total", output)
    FIGURES.update(
        operations=result["operations"]["tested"],
        documented=result["operations"]["total"],
        cases=result["test_cases"]["generated"],
        scenarios=int(scenarios.group(1)) if scenarios else 0,
        links=f"{links.group(1)} of {links.group(2)}" if links else "none",
        failures=sum(f["count"] for f in result["failures"]),
        errors=len(result["errors"]),
        checked=sum(1 for line in excused if line.startswith("checked")),
        excused=sorted({line.split(" ", 1)[1] for line in excused if line.startswith("excused")}),
        excused_count=sum(1 for line in excused if line.startswith("excused")),
        seconds=round(result["running_time"]),
    )
    assert done.returncode == 0 and result["exit_code"] == 0, failures + output[-3000:]
    assert result["failures"] == [] and result["errors"] == [], failures
    assert result["operations"]["tested"] == result["operations"]["total"] >= 10
    assert all(p["status"] == "success" for p in result["phases"].values()), result["phases"]
    assert FIGURES["scenarios"] > 0 and links is not None and int(links.group(1)) > 0
    # the replacement check judged the positive cases (it is not silently absent)
    assert FIGURES["checked"] > 100, FIGURES
