"""``GET /metrics``: the API's Prometheus metrics, for operators (no token, no rate limit).

Request latency is observed by every gunicorn worker and summed over them
(``backprop.metrics``); jobs by status and the queues' depths are read at scrape time, from
the database and from Redis, so every API process answers the same. A source that does not
answer leaves its gauges out and says so in ``backprop_scrape_source_up``.
The reason to change is a metric the API serves, or a source it reads at scrape time.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from backprop.metrics import api_metrics, scrape_registry
from messaging.dispatch import queue_keys
from store.counts import jobs_by_status

from .openapi import operation
from .services import Services, services

bp = Blueprint("metrics", __name__)
log = logging.getLogger("backprop.api")
TEXT_FORMAT = "text/plain"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}  # others: "other"


def init_app(app: Flask) -> None:
    """Observe every answer's latency under its route (the URL rule, never the raw path)."""

    @app.after_request
    def _observe(response):
        rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        method = request.method if request.method in METHODS else "other"
        took = time.perf_counter() - g.get("started", time.perf_counter())
        api_metrics().request_seconds.labels(rule, method, response.status_code).observe(took)
        return response


@bp.get("/metrics")
@operation(
    "serviceMetrics",
    responses={200: None},
    secure=False,
    binary={200: TEXT_FORMAT},
    media_schemas={200: {"schema": {"type": "string"}}},  # text, not bytes
)
def metrics():
    """The service's metrics in Prometheus' text format (for a scraper, not for tenants).

    Requests by route and status, summed over the API's processes; jobs by status and the
    queues' depths, read at each scrape. Each worker serves its own on WORKER_METRICS_PORT."""
    registry = scrape_registry()
    registry.register(ServiceState(services()))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)


class ServiceState:
    """A collector of what the database and the broker hold, read when scraped."""

    def __init__(self, s: Services):
        self.s = s

    def collect(self):
        up = GaugeMetricFamily(
            "backprop_scrape_source_up",
            "Whether this scrape could read the database (for backprop_jobs) and the broker "
            "(for backprop_queue_depth)",
            labels=["source"],
        )
        for source, read in (("database", self._jobs), ("broker", self._queues)):
            try:
                family = read()
            except Exception as exc:  # any failure: this scrape goes without those gauges
                log.warning("metrics: %s unavailable (%s)", source, type(exc).__name__)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield family
        yield up

    def _jobs(self) -> GaugeMetricFamily:
        with self.s.db.reading() as session:
            counts = jobs_by_status(session)
        family = GaugeMetricFamily("backprop_jobs", "Jobs by status", labels=["status"])
        for status, count in counts.items():
            family.add_metric([status], count)
        return family

    def _queues(self) -> GaugeMetricFamily:
        settings = self.s.settings
        family = GaugeMetricFamily(
            "backprop_queue_depth",
            "Messages waiting in a Celery queue (every priority's list), not yet fetched",
            labels=["queue"],
        )
        client = self.s.dispatcher.redis
        for queue in (settings.training_queue, settings.control_queue, settings.callbacks_queue):
            with client.pipeline(transaction=False) as pipe:
                for key in queue_keys(queue):
                    pipe.llen(key)
                family.add_metric([queue], sum(pipe.execute()))
        return family
