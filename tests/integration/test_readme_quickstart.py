"""The README's quick start, run as written: every code block of its "Quick start" section,
in order, in one bash shell (as a user would paste them), against a real `make run`."""

from __future__ import annotations

import re
import subprocess

import numpy as np

from tests.support.stack import ROOT


def quick_start_blocks() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def test_the_quick_start_has_shell_and_python_blocks():
    kinds = [kind for kind, _ in quick_start_blocks()]
    assert kinds.count("bash") >= 4 and kinds.count("python") == 1


def test_the_readme_quick_start_runs_as_written(make_run, tmp_path):
    _process, _base, var = make_run
    assert var == tmp_path / "var"  # `source var/dev.env` from tmp_path finds it
    script = ["set -euo pipefail"]
    for kind, code in quick_start_blocks():
        if kind == "bash":
            script.append(code)
        else:  # "run it in the shell that sourced var/dev.env, as `python upload.py`"
            (tmp_path / "upload.py").write_text(code)
            script.append("python upload.py")
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout
    assert done.returncode == 0, output[-3000:] + done.stderr[-3000:]
    job_id = re.search(r"^job ([0-9a-f-]{36})$", output, re.M).group(1)
    assert re.search(r"^succeeded 2000 epochs$", output, re.M), output[-3000:]
    assert f'"id":"{job_id}"' in output and '"metrics":[{"epoch":1,' in output
    assert '"outputs":[[' in output
    # the cancel found the long job queued (200: cancelled) or running (202: cancel_requested)
    assert re.search(r'"status":"(cancelled|running)".*"cancel_requested":true', output)
    assert re.search(r"^202 [0-9a-f-]{36}$", output, re.M), output[-2000:]
    model = np.load(tmp_path / "xor.npz", allow_pickle=False)
    assert model["W0"].shape == (2, 4) and model["W1"].shape == (4, 1)

    # "Operating it": in a shell that sourced var/dev.env, the operator's commands reach
    # this service (its SQLite file and its embedded Redis on a port of its own)
    operating = subprocess.run(
        ["bash", "-c", "set -e; source var/dev.env; backprop tokens list; "
         "celery -A worker.app inspect ping --timeout 10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert operating.returncode == 0, operating.stdout[-2000:] + operating.stderr[-2000:]
    assert "\tdev\t" in operating.stdout and "pong" in operating.stdout
