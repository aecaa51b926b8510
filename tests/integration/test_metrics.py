"""What operators watch, scraped from a live API (gunicorn, two workers) and a live Celery
worker, before, during and after a job: the numbers move as the job does."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_token
from tests.integration.test_webhooks import XOR, Receiver
from tests.support.services import free_port
from tests.support.stack import Client, start_api, start_worker


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text page: (name, labels) -> value."""
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


@pytest.fixture
def own_stack(own_env, tmp_path):
    """An API of our own, on a database and queues of its own, and a worker for it, started
    when the test asks, that serves its metrics on a free port."""
    env = own_env | {"WORKER_METRICS_PORT": str(free_port())}
    api, base = start_api(env, tmp_path, "metrics-api")
    workers = []

    def start_our_worker():
        workers.append(start_worker(env, tmp_path, "metrics-worker"))
        return workers[-1]

    yield env, Client(base, make_token(env["DATABASE_URL"], "alice")), api, start_our_worker
    for process in workers + [api]:
        process.stop()


def scrape_until(url: str, done, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while not done(samples := scrape(url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return samples


def test_the_api_and_a_worker_count_a_job_as_it_goes(own_stack):
    env, client, api, start_our_worker = own_stack
    api_metrics = f"{client.base}/metrics"
    before = scrape(api_metrics)  # no token: operators' scrapers have none
    assert value(before, "backprop_scrape_source_up", source="database") == 1
    assert value(before, "backprop_scrape_source_up", source="broker") == 1
    for _ in range(5):
        assert client.get("/healthz").status_code == 200

    receiver = Receiver()
    try:
        # long enough to be scraped while it trains; cancelled once it was
        job = client.submit({**XOR, "epochs": 100_000, "callback_url": receiver.url + "/done"})
        queued = scrape(api_metrics)
        # the job waits in our training queue's lists: nobody consumes them yet
        assert value(queued, "backprop_queue_depth", queue=env["TRAINING_QUEUE"]) == 1
        assert value(queued, "backprop_jobs", status="queued") == 1
        # summed over gunicorn's workers, whichever answered; by the URL rule, not the path
        healthz = dict(route="/healthz", method="GET", status=200)
        count = "backprop_http_request_duration_seconds_count"
        assert value(queued, count, **healthz) == value(before, count, **healthz) + 5
        assert value(queued, count, route="/v1/jobs", method="POST", status=202) == 1
        client.job(job["id"])
        polled = scrape(api_metrics)
        assert value(polled, count, route="/v1/jobs/<job_id>", method="GET", status=200) == 1

        worker = start_our_worker()
        worker_metrics = f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics"
        running = client.wait(job["id"], statuses=("running",))
        while running["progress"]["epoch"] == 0:
            running = client.job(job["id"])
        # during the job: claimed, not ended; the API counts it running
        training = scrape(worker_metrics)
        assert value(training, "backprop_claim_latency_seconds_count", claim="first") == 1
        assert value(training, "backprop_job_duration_seconds_count", status="cancelled") == 0
        assert value(scrape(api_metrics), "backprop_jobs", status="running") == 1
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        assert client.wait(job["id"])["status"] == "cancelled"
        delivered = ("backprop_webhook_deliveries_total", frozenset({("event", "job.ended")}))
        trained = scrape_until(worker_metrics, lambda samples: delivered in samples)
    finally:
        receiver.server.shutdown()

    assert value(trained, "backprop_claim_latency_seconds_count", claim="first") == 1
    assert value(trained, "backprop_claim_latency_seconds_sum", claim="first") > 0
    assert value(trained, "backprop_job_duration_seconds_count", status="cancelled") == 1
    assert value(trained, "backprop_job_epochs_per_second_count") == 1
    assert value(trained, "backprop_job_epochs_per_second_sum") > 0
    assert value(trained, "backprop_reconciler_passes_total") >= 1  # the one at start-up
    assert value(trained, "backprop_webhook_deliveries_total", event="job.ended") == 1
    assert value(trained, "backprop_webhook_delivery_failures_total", event="job.ended") == 0

    after = scrape(api_metrics)
    assert value(after, "backprop_queue_depth", queue=env["TRAINING_QUEUE"]) == 0
    assert value(after, "backprop_jobs", status="queued") == 0
    assert value(after, "backprop_jobs", status="running") == 0
    assert value(after, "backprop_jobs", status="cancelled") == 1

    # each instance's directory goes with it
    directories = Path(env["VAR_DIR"]) / "metrics"
    for process, kind in ((worker, "worker"), (api, "api")):
        assert len(list(directories.glob(f"{kind}-*-{process.process.pid}"))) == 1
        process.stop()
        assert not list(directories.glob(f"{kind}-*-{process.process.pid}"))
