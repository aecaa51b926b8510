"""Every setting of the service, read from environment variables (this is the only place).

Each field's name, upper-cased, is its environment variable: ``DATABASE_URL``,
``REDIS_URL``, ``LEASE_SECONDS`` and so on. The README's configuration table lists them with
these defaults. The defaults make a working single machine (``make run``); production points
``DATABASE_URL`` at PostgreSQL and ``REDIS_URL`` at a persistent Redis. The reason to change is
a setting: its name, its default or its check.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .files import write_private


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- where things live
    var_dir: Path = Field(Path("var"), description="Local state of the embedded default")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite at VAR_DIR/backprop.sqlite3"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker")
    rate_limit_storage_url: str = Field(
        "", description="flask-limiter storage; empty means REDIS_URL"
    )

    # --- the worker's contract with the database (see worker/ and docs in README)
    training_queue: str = Field("training", description="Celery queue of training tasks")
    control_queue: str = Field("celery", description="Celery queue of the reconciler's tasks")
    callback_queue: str = Field(
        "",
        description="Celery queue of callback deliveries, which a worker of its own runs "
        "concurrently; empty means CONTROL_QUEUE.callbacks",
    )
    lease_seconds: float = Field(30.0, gt=0, description="A claim's lifetime without heartbeat")
    heartbeat_seconds: float = Field(
        1.0, gt=0, description="How often a worker renews its lease and polls for cancel"
    )
    checkpoint_seconds: float = Field(
        5.0, gt=0, description="Checkpoint after this long of training, inside an epoch too"
    )
    metrics_flush_seconds: float = Field(
        0.5, gt=0, description="Write buffered per-epoch metrics and progress this often"
    )
    max_attempts: int = Field(8, ge=1, description="Claims of one job before it fails")
    reconcile_seconds: float = Field(30.0, gt=0, description="Reconciler period (Celery beat)")
    requeue_after_seconds: float = Field(
        60.0, gt=0, description="Re-send a queued job whose message is older than this"
    )
    db_retry_seconds: float = Field(
        300.0, gt=0, description="How long a worker retries a database outage before giving up"
    )
    visibility_timeout: int = Field(
        7200, gt=0, description="Redis redelivers an unacknowledged message after this"
    )
    unacked_restore_seconds: int = Field(
        100, ge=1, description="How often workers look for messages past the visibility timeout"
    )
    max_runtime_seconds: int = Field(
        3600, gt=0, description="Longest a job may train; also the per-job default"
    )
    worker_max_memory_per_child: int = Field(
        4_000_000, gt=0, description="KiB a worker child may use before it is replaced"
    )
    worker_concurrency: int = Field(
        0, ge=0, description="Training processes per Celery worker; 0 means one per core"
    )
    worker_blas_threads: int = Field(
        0, ge=0, description="BLAS threads per training process; 0 means cores / concurrency"
    )
    broker_timeout_seconds: float = Field(
        2.0, gt=0, description="Connect/publish timeout towards Redis"
    )
    # --- bounds on every connection: a cut network, a stuck transaction, a lock wait
    tcp_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection whose peer stops answering (a cut network: no reset) fails "
        "after about this long: TCP keepalives and tcp_user_timeout, on PostgreSQL at both ends",
    )
    db_idle_in_transaction_seconds: float = Field(
        15.0,
        gt=0,
        description="PostgreSQL ends a session idle inside a transaction this long, releasing "
        "its locks (a worker cut off mid-transaction holds none for longer)",
    )
    db_lock_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest wait for a PostgreSQL lock before the statement fails (a worker "
        "retries it as an outage, the API answers 503)",
    )
    db_ping_idle_seconds: float = Field(
        1.0,
        ge=0,
        description="A pooled PostgreSQL connection idle this long is pinged before use (a "
        "dead one is replaced); one used more recently is trusted, saving a round trip per "
        "request (0: ping every time)",
    )

    # --- limits of the API
    max_content_length: int = Field(64 * 2**20, gt=0, description="Largest request body, bytes")
    max_dataset_bytes: int = Field(
        2 * 2**30, gt=0, description="Largest data set upload, bytes (separate from the JSON limit)"
    )
    max_dataset_storage_bytes: int = Field(
        20 * 2**30, gt=0, description="Stored data set bytes per tenant"
    )
    max_job_storage_bytes: int = Field(
        20 * 2**30,
        gt=0,
        description="What a tenant's jobs may store (inline data, checkpoints, models), bytes",
    )
    max_layers: int = Field(64, ge=2, description="Most layers in a structure")
    max_layer_width: int = Field(8192, ge=1, description="Widest layer")
    max_classes: int = Field(
        1000, ge=2, description="Most classes of a CSV upload's ?label= column (one-hot targets)"
    )
    max_parameters: int = Field(
        10_000_000, ge=1, description="Most weights and biases of a job's network"
    )
    max_json_model_parameters: int = Field(
        1_000_000,
        ge=1,
        description="Largest model GET /v1/jobs/{id}/model answers as JSON (model.npz has any)",
    )
    model_cache_bytes: int = Field(
        256 * 2**20, ge=0, description="Trained networks kept per API process for predict, bytes"
    )
    max_epochs: int = Field(100_000, ge=1, description="Most epochs of a job")
    max_job_cost: float = Field(
        2e12, gt=0, description="Budget: samples x epochs x parameters of one job"
    )
    max_predict_cost: float = Field(
        2e10, gt=0, description="Budget of one prediction request: rows x parameters"
    )
    max_running_jobs_per_tenant: int = Field(4, ge=1, description="Running jobs per tenant")
    max_queued_jobs_per_tenant: int = Field(100, ge=1, description="Queued jobs per tenant")
    max_sweep_trials: int = Field(1000, ge=1, description="Most trials of a sweep")
    max_sweep_parallel: int = Field(
        32, ge=1, description="Largest max_parallel of a sweep (trials queued or running at once)"
    )
    rate_limit: str = Field(
        "600/minute", description="Requests per tenant, all its tokens together (limits syntax)"
    )
    auth_failure_limit: str = Field(
        "30/minute",
        description="Failed token lookups per client address; past it a made-up token gets 429 "
        "without a lookup of its own, while a valid one is still answered",
    )
    trusted_proxies: int = Field(
        0,
        ge=0,
        description="Proxies in front of the API whose X-Forwarded-For names the client "
        "(0: the connection's address is the client's)",
    )
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="A token's tenant is cached per API process this long; a "
        "revocation takes effect within it (0: look every token up)",
    )
    max_waits_per_process: int = Field(
        16,
        ge=1,
        description="Long polls and event streams at once per API process (half of its 32 "
        "threads), past it 429",
    )
    max_waits_per_tenant: int = Field(
        4, ge=1, description="Long polls and event streams of one tenant at once per API process"
    )
    request_io_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="Once a request's headers are in, no read of its body or write of its "
        "answer waits on the client longer than this",
    )
    transfer_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="Time a client may make the API wait on it (sending a body, reading an "
        "answer) before MIN_TRANSFER_BYTES_PER_SECOND applies",
    )
    min_transfer_bytes_per_second: int = Field(
        16 * 1024,
        gt=0,
        description="Past the grace, a client that sends its body or reads its answer slower "
        "gets a 408 (body) or is cut off (answer); event streams are exempt",
    )
    max_transfers_per_process: int = Field(
        8,
        ge=1,
        description="Uploads (bodies over 64 KiB) and streamed downloads at once per API "
        "process (a quarter of its 32 threads), past it 429",
    )
    max_transfers_per_tenant: int = Field(
        4, ge=1, description="Uploads and streamed downloads of one tenant at once per API process"
    )
    idempotency_ttl_seconds: int = Field(86_400, gt=0, description="How long submits replay")
    blob_chunk_bytes: int = Field(2**20, ge=1024, description="Size of stored array chunks")

    callback_allow_private_networks: bool = Field(
        False, description="Allow callback URLs on private, loopback and link-local addresses"
    )
    webhook_attempts: int = Field(6, ge=1, description="Deliveries of a callback before giving up")
    callback_concurrency: int = Field(
        8, ge=1, description="Callback deliveries at once (threads of the callbacks worker)"
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="Wall-clock limit of one callback attempt, connect to answer"
    )
    webhook_backoff_seconds: float = Field(
        2.0, gt=0, description="Wait before a callback's second delivery; doubles each time"
    )

    secret_key: str = Field(
        "",
        description="Signs the dashboard's session cookies; empty means a random key kept in "
        "VAR_DIR/secret_key (enough for one machine; set it when API processes span machines)",
    )
    session_hours: float = Field(12.0, gt=0, description="How long a dashboard sign-in lasts")
    cookie_secure: bool = Field(
        False, description="Send the dashboard's cookie over HTTPS only (set it behind TLS)"
    )

    # --- what operators watch (Prometheus; see the README's "Metrics")
    metrics_dir: str = Field(
        "",
        description="Where the API's and workers' processes keep their metrics for a scrape to "
        "sum, a directory per instance; empty means VAR_DIR/metrics (local to the host)",
    )
    worker_metrics_port: int = Field(
        9808,
        ge=0,
        le=65535,
        description="Port on which each Celery worker serves its metrics (0: not served)",
    )
    worker_metrics_address: str = Field(
        "0.0.0.0", description="Address the workers' metrics port listens on"
    )

    log_level: str = Field("INFO", description="Python logging level")

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"HEARTBEAT_SECONDS ({self.heartbeat_seconds}) must be shorter than "
                f"LEASE_SECONDS ({self.lease_seconds}), or leases expire between renewals"
            )
        return self

    @property
    def worker_processes(self) -> int:
        return self.worker_concurrency or os.cpu_count() or 1

    @property
    def tcp_keepalive(self) -> tuple[int, int, int]:
        """(idle, interval, count) of TCP keepalives that notice a silent peer within about
        TCP_TIMEOUT_SECONDS: the same on every PostgreSQL and Redis connection."""
        idle = max(1, int(self.tcp_timeout_seconds / 2))
        interval = max(1, int(self.tcp_timeout_seconds / 6))
        return idle, interval, 3

    @property
    def callbacks_queue(self) -> str:
        return self.callback_queue or f"{self.control_queue}.callbacks"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'backprop.sqlite3').resolve()}"

    @property
    def metrics_root(self) -> Path:
        return Path(self.metrics_dir) if self.metrics_dir else self.var_dir / "metrics"

    @property
    def limiter_storage_url(self) -> str:
        return self.rate_limit_storage_url or self.redis_url

    def session_key(self) -> str:
        """SECRET_KEY, or the machine's own key in VAR_DIR/secret_key, made once."""
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "secret_key"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # written aside, then linked into place: concurrent API processes agree on the
            # first key linked, and none reads a half-written file
            draft = path.with_name(f"secret_key.{os.getpid()}")
            write_private(draft, secrets.token_urlsafe(48))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
