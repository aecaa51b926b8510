"""The Python client and the ``backprop`` CLI against the live stack (gunicorn, a Celery
worker, Redis, PostgreSQL or SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import httpx
import numpy as np
import pytest

from api import create_app
from backprop.client import ApiError, Client, JobFailed
from core import Network
from tests.conftest import make_token

XOR_X = np.array([[0.0, 0], [0, 1], [1, 0], [1, 1]])
XOR_Y = np.array([[0.0], [1], [1], [0]])


@pytest.fixture
def client(stack):
    with Client(stack.base, stack.tokens["alice"]) as c:
        yield c


def test_the_client_submits_waits_and_reads_a_job(client):
    job = client.submit(
        structure=[2, 4, 1], epochs=300, learning_rate=2.0, seed=3, inputs=XOR_X,
        targets=XOR_Y, batch_size=2, labels={"suite": "client"},
    )  # fmt: skip
    seen = []
    done = client.wait(job["id"], timeout=60, on_update=seen.append)
    assert done["status"] == "succeeded" and seen[-1] == done
    rows = client.metrics(job["id"], array=True)
    assert rows.dtype.names[:2] == ("epoch", "cost") and len(rows) == 300
    assert rows["epoch"][-1] == 300 and np.isnan(rows["val_cost"]).all()
    network = client.model(job["id"], network=True)
    assert isinstance(network, Network)
    np.testing.assert_allclose(client.predict(job["id"], XOR_X), network.predict(XOR_X))
    assert "lineage" in client.model(job["id"])
    assert job["id"] in {j["id"] for j in client.list(label="suite:client")}


def test_the_client_raises_the_problem_and_the_job_s_failure(client):
    with pytest.raises(ApiError) as bad:
        client.submit(structure=[3, 1], epochs=1, learning_rate=1.0, inputs=XOR_X, targets=XOR_Y)
    assert bad.value.status == 422 and bad.value.errors[0]["field"] == "data.inputs"
    assert bad.value.request_id
    options = {"activation": "relu", "output_activation": "identity"}
    job = client.submit(structure=[2, 4, 1], epochs=50, learning_rate=1e200, options=options,
                        inputs=XOR_X, targets=XOR_Y)  # fmt: skip
    with pytest.raises(JobFailed) as failed:
        client.wait(job["id"], timeout=60)
    assert failed.value.job["error"]["type"] == "diverged" and "diverged" in str(failed.value)


def test_a_retried_submit_makes_one_job_and_429s_wait_for_retry_after(stack):
    """The real app in process (a tight rate limit), through httpx's WSGI transport."""
    from backprop.settings import Settings

    settings = Settings(
        database_url=stack.database_url,
        redis_url=stack.env["REDIS_URL"],
        training_queue=f"unread-{uuid.uuid4().hex[:8]}",
        rate_limit="3/second",
    )
    tenant = f"r-{uuid.uuid4().hex[:6]}"
    transport = httpx.WSGITransport(app=create_app(settings))
    with Client("http://app", make_token(stack.database_url, tenant), transport=transport) as c:
        key = str(uuid.uuid4())
        first = c.submit(structure=[2, 1], epochs=1, learning_rate=1.0, inputs=XOR_X,
                         targets=XOR_Y, idempotency_key=key)  # fmt: skip
        again = c.submit(structure=[2, 1], epochs=1, learning_rate=1.0, inputs=XOR_X,
                         targets=XOR_Y, idempotency_key=key)  # fmt: skip
        assert again["id"] == first["id"]
        # more requests than the limit allows in a second: 429s are waited out, none raised
        statuses = [c.get(first["id"])["status"] for _ in range(8)]
        assert statuses == ["queued"] * 8
        assert len(list(c.list())) == 1


def cli(stack, *args, token="alice", url=None, columns=80):
    env = dict(os.environ, BACKPROP_URL=url or stack.base, BACKPROP_TOKEN=stack.tokens[token])
    env["COLUMNS"] = str(columns)  # the width tables are drawn for off a terminal
    env["VAR_DIR"] = "/nonexistent"  # no dev token to fall back on
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_the_cli_uploads_submits_with_a_live_bar_and_reads_the_results(stack, tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.random((400, 4))
    targets = np.eye(2)[(inputs.sum(axis=1) > 2).astype(int)]
    np.savez(tmp_path / "data.npz", inputs=inputs, targets=targets)
    done = cli(stack, "submit", "--data", str(tmp_path / "data.npz"), "--structure", "4,8,2",
               "--epochs", "20", "--rate", "3.0", "--validation-split", "0.2", "--seed", "1",
               "--name", "cli-job", "--wait")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch 20/20" in done.stdout and "succeeded" in done.stdout
    assert "val acc" in done.stdout and "samples/s" in done.stdout
    listed = json.loads(cli(stack, "list", "--json").stdout)
    job_id = next(j["id"] for j in listed if j["name"] == "cli-job")
    status = json.loads(cli(stack, "status", job_id, "--json").stdout)
    assert status["status"] == "succeeded" and status["data"]["form"] == "dataset"
    metrics = json.loads(cli(stack, "metrics", job_id, "--json").stdout)
    assert len(metrics) == 20 and metrics[-1]["val_accuracy"] is not None
    assert cli(stack, "model", job_id, "-o", str(tmp_path / "m.npz")).returncode == 0
    assert "W0" in np.load(tmp_path / "m.npz").files
    np.save(tmp_path / "x.npy", inputs[:3])
    predicted = cli(stack, "predict", job_id, "--inputs", str(tmp_path / "x.npy"))
    assert predicted.returncode == 0 and len(json.loads(predicted.stdout)) == 3
    datasets = json.loads(cli(stack, "datasets", "list", "--json").stdout)
    assert any(d["samples"] == 400 for d in datasets)
    again = cli(stack, "watch", job_id)
    assert again.returncode == 0 and "succeeded" in again.stdout


def test_the_cli_submits_an_optimizer_a_schedule_and_clipping(stack, tmp_path):
    np.savez(tmp_path / "xor.npz", inputs=XOR_X, targets=XOR_Y)
    done = cli(stack, "submit", "--data", str(tmp_path / "xor.npz"), "--structure", "2,3,1",
               "--epochs", "4", "--rate", "0.05", "--batch-size", "2",
               "--optimizer", "adam:beta1=0.8,weight_decay=0", "--schedule",
               "cosine:warmup=1,per=step", "--clip-norm", "5", "--wait", "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded"
    assert job["options"]["optimizer"] == {
        "name": "adam", "beta1": 0.8, "beta2": 0.999, "eps": 1e-08, "weight_decay": 0.0
    }  # fmt: skip
    assert job["options"]["schedule"] == {
        "name": "cosine", "t_max": None, "min_lr": 0.0, "warmup": 1, "per": "step"
    }  # fmt: skip
    assert job["options"]["clip_norm"] == 5.0
    refused = cli(stack, "submit", "--data", str(tmp_path / "xor.npz"), "--structure", "2,3,1",
                  "--epochs", "4", "--rate", "0.05", "--optimizer",
                  "momentum:momentum=0,nesterov=true")  # fmt: skip
    assert refused.returncode == 1 and "options.optimizer" in refused.stderr
    assert "nesterov" in refused.stderr and "Traceback" not in refused.stderr


def test_the_cli_says_what_went_wrong_without_a_traceback(stack, tmp_path):
    bad = cli(stack, "submit", "--dataset", str(uuid.uuid4()), "--structure", "4,2",
              "--epochs", "1", "--rate", "1")  # fmt: skip
    assert bad.returncode == 1 and "data.dataset_id" in bad.stderr
    spec = {"structure": [2, 4, 1], "epochs": 30, "learning_rate": 1e200,
            "options": {"activation": "relu", "output_activation": "identity"},
            "data": {"inputs": XOR_X.tolist(), "targets": XOR_Y.tolist()}}  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(spec))
    failed = cli(stack, "submit", str(tmp_path / "job.json"), "--wait")
    assert failed.returncode == 1 and "failed (diverged" in failed.stderr
    unreachable = cli(stack, "list", url="http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    missing = cli(stack, "status", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no job" in missing.stderr
    for run in (bad, failed, unreachable, missing):
        assert "Traceback" not in run.stderr + run.stdout


def test_the_cli_runs_a_sweep_with_a_live_leaderboard(stack, tmp_path, client):
    rng = np.random.default_rng(4)
    inputs = rng.random((120, 3))
    np.savez(tmp_path / "sweep.npz", inputs=inputs, targets=np.eye(2)[(inputs[:, 0] > 0.5) * 1])
    stored = json.loads(
        cli(stack, "datasets", "upload", str(tmp_path / "sweep.npz"), "--json").stdout
    )
    body = {
        "name": "cli-sweep",
        "base": {"structure": [3, 4, 2], "epochs": 4, "learning_rate": 2.0,
                 "data": {"dataset_id": stored["id"], "batch_size": 10},
                 "options": {"validation_split": 0.25}},
        "search": {"learning_rate": {"choice": [0.5, 4.0]}, "structure[1]": {"choice": [2, 6]}},
        "method": "grid",
        "objective": {"metric": "val_accuracy"},
    }  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps(body))
    done = cli(stack, "sweep", "submit", str(tmp_path / "sweep.json"), "--watch", columns=160)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4/4 trials ended" in done.stdout and "val_accuracy" in done.stdout
    assert "structure[1]" in done.stdout and "succeeded" in done.stdout
    sweep_id = done.stdout.split()[1]
    status = json.loads(cli(stack, "sweep", "status", sweep_id, "--json").stdout)
    assert status["status"] == "succeeded" and len(status["leaderboard"]) == 4
    listed = json.loads(cli(stack, "sweep", "list", "--json").stdout)
    assert sweep_id in [s["id"] for s in listed]
    ended = cli(stack, "sweep", "cancel", sweep_id)
    assert ended.returncode == 1 and "already ended" in ended.stderr
    assert "Traceback" not in ended.stderr
    # the client: a retried submit (same Idempotency-Key) makes one sweep
    first = client.submit_sweep(body, idempotency_key="sweep-key-1")
    again = client.submit_sweep(body, idempotency_key="sweep-key-1")
    assert again["id"] == first["id"]
    # JSON lines for scripts: each state as it comes, ended trials never fewer, then the end
    watched = cli(stack, "sweep", "watch", first["id"], "--jsonl")
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    ended = [x["counts"]["succeeded"] + x["counts"]["failed"] + x["counts"]["cancelled"]
             for x in lines]  # fmt: skip
    assert ended == sorted(ended) and ended[-1] == 4
    assert lines[-1]["status"] == "succeeded" and lines[-1]["counts"]["running"] == 0
    states = []  # the event stream's states, the last one with no trial running
    best = client.wait_sweep(first["id"], timeout=60, on_update=states.append)["best"]
    assert states and states[-1]["status"] == "succeeded" and states[-1]["counts"]["running"] == 0
    with pytest.raises(ApiError) as unknown:
        client.wait_sweep(str(uuid.uuid4()), timeout=10)
    assert unknown.value.status == 404
    assert client.best_model(first["id"])["job_id"] == best["job_id"]
    # the best trial extended by 2 epochs (the CLI), then nothing more to do (the client)
    more = ["--extend-top", "1", "--extend-epochs", "2", "--json"]
    extended = json.loads(cli(stack, "sweep", "continue", first["id"], *more).stdout)
    assert extended["status"] == "running" and extended["trials"] == 5
    done = client.wait_sweep(first["id"], timeout=60)
    fifth = next(t for t in done["leaderboard"] if t["trial"] == 5)
    assert fifth["progress"] == {"epoch": 6, "epochs": 6} and fifth["params"] == best["params"]
    with pytest.raises(ApiError) as nothing:
        client.continue_sweep(first["id"])
    assert nothing.value.status == 409
    client.delete_sweep(first["id"])
    deleted = cli(stack, "sweep", "delete", sweep_id)
    assert deleted.returncode == 0 and f"deleted {sweep_id}" in deleted.stdout
    gone = cli(stack, "sweep", "status", sweep_id)
    assert gone.returncode == 1 and "no sweep" in gone.stderr
    remaining = [s["id"] for s in client.sweeps()]
    assert sweep_id not in remaining and first["id"] not in remaining


def test_the_cli_diffs_two_runs(stack, client):
    data = {"inputs": XOR_X.tolist(), "targets": XOR_Y.tolist(), "batch_size": 2}
    spec = {"structure": [2, 3, 1], "epochs": 4, "learning_rate": 2.0, "seed": 5, "data": data}
    faster = {**spec, "learning_rate": 3.0}
    ids = [client.submit(s)["id"] for s in (spec, spec, faster)]
    for job_id in ids:
        assert client.wait(job_id)["status"] == "succeeded"
    same = cli(stack, "diff", ids[0], ids[1], columns=200)
    assert same.returncode == 0, same.stderr
    assert "4 epochs compared: metrics never differ; same weights" in same.stdout
    parted = json.loads(cli(stack, "diff", ids[0], ids[2], "--json").stdout)
    assert parted["spec"] == [{"field": "learning_rate", "this": 2.0, "other": 3.0}]
    assert parted["first_divergent_epoch"] == 1 and parted["weights_equal"] is False


def test_the_client_and_the_cli_continue_a_job(stack, client):
    data = {"inputs": XOR_X.tolist(), "targets": XOR_Y.tolist(), "batch_size": 2}
    spec = {"structure": [2, 3, 1], "learning_rate": 2.0, "seed": 6, "data": data}
    short = client.submit({**spec, "epochs": 2})["id"]
    whole = client.submit({**spec, "epochs": 5})["id"]
    assert client.wait(short)["status"] == "succeeded"
    child = client.continue_job(short, 1)
    assert child["continued_from"] == short and child["progress"]["epochs"] == 3
    assert client.wait(child["id"])["status"] == "succeeded"
    shown = json.loads(cli(stack, "continue", child["id"], "--epochs", "2", "--json").stdout)
    assert shown["continued_from"] == child["id"] and shown["progress"]["epochs"] == 5
    assert client.wait(shown["id"])["status"] == "succeeded"
    assert client.wait(whole)["status"] == "succeeded"
    # continued twice, 2 + 1 + 2 epochs: the bits of one 5-epoch job
    assert client.diff(shown["id"], whole)["weights_equal"] is True
    assert client.diff(shown["id"], whole)["first_divergent_epoch"] is None


def test_the_cli_shows_a_replicated_sweep_s_configurations(stack, client):
    rng = np.random.default_rng(9)
    inputs = rng.random((60, 3))
    targets = np.eye(2)[(inputs[:, 1] > 0.5) * 1]
    stored = client.upload(inputs=inputs, targets=targets)
    body = {
        "base": {"structure": [3, 3, 2], "epochs": 2, "learning_rate": 2.0,
                 "data": {"dataset_id": stored["id"], "batch_size": 10}},
        "search": {"learning_rate": {"choice": [0.5, 4.0]}},
        "method": "grid",
        "replicates": 2,
        "objective": {"metric": "cost"},
    }  # fmt: skip
    sweep = client.wait_sweep(client.submit_sweep(body)["id"], timeout=60)
    assert sweep["status"] == "succeeded" and len(sweep["configurations"]) == 2
    shown = cli(stack, "sweep", "status", sweep["id"], columns=200)
    assert shown.returncode == 0, shown.stderr
    assert "configurations (2 seeds each), best mean first" in shown.stdout
    best = sweep["configurations"][0]
    assert f"{best['mean']:.4g}" in shown.stdout and "2/2" in shown.stdout
