"""The scheduler's settings, read once from ``COMFYFLEET_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    NatsConfig,
    S3Config,
    Settings,
    group,
    setting,
)
from comfyfleet.common.environments import NATIVE, name_problem
from services.scheduler.autoscale import ScalePolicy
from services.scheduler.breaker import BreakerPolicy
from services.scheduler.cost import DEFAULT_PRICES, PriceTable
from services.scheduler.providers.ecs import EcsConfig
from services.scheduler.providers.runpod import RunpodConfig

# A provider sees many attempts: judge it on enough of them, and probe it with a few.
PROVIDER_BREAKER = BreakerPolicy(
    window_s=120.0,
    minimum_calls=10,
    failure_rate=0.5,
    slow_call_s=180.0,
    slow_call_rate=0.8,
    open_wait_s=30.0,
    half_open_probes=3,
)
# One executor sees few attempts a minute: a longer window, and one probe at a time.
EXECUTOR_BREAKER = BreakerPolicy(
    window_s=300.0,
    minimum_calls=5,
    failure_rate=0.5,
    slow_call_s=180.0,
    slow_call_rate=0.8,
    open_wait_s=60.0,
    half_open_probes=1,
)


def _prices(raw: str) -> PriceTable:
    """``COMFYFLEET_SCHEDULER_PRICES``: the price table as JSON text, or ``@<path>`` of a
    JSON file (see ``PriceTable.parse``). The providers it names replace the defaults' entries
    for them; the others keep their default prices (so a provider left out never looks free
    to the router)."""
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as err:
            raise ConfigError(str(err)) from None
    return PriceTable({**DEFAULT_PRICES.providers, **PriceTable.parse(raw).providers})


@dataclass(frozen=True)
class SchedulerSettings(Settings):
    """How the queue, leases, retries and timeouts behave."""

    # Attempts an execution may use for infrastructure failures when the request sets none.
    max_attempts: int = setting("SCHEDULER_MAX_ATTEMPTS", 3)
    # The most attempts a request may ask for.
    max_attempts_limit: int = setting("SCHEDULER_MAX_ATTEMPTS_LIMIT", 10)
    # An attempt's lease; renewed while its executor reports progress or heartbeats.
    lease_s: float = setting("SCHEDULER_LEASE", 30.0)
    # How often executors heartbeat; a registration lapses after three missed ones.
    heartbeat_interval_s: float = setting("SCHEDULER_HEARTBEAT_INTERVAL", 5.0)
    # Retry backoff: base * 2^(n-1), capped, then jittered.
    backoff_base_s: float = setting("SCHEDULER_BACKOFF_BASE", 2.0)
    backoff_max_s: float = setting("SCHEDULER_BACKOFF_MAX", 60.0)
    # Presigned URL lifetimes: inputs and output slots for executors, outputs for clients
    # (Get/List), and outputs in events (webhook deliveries may retry for hours).
    input_url_ttl_s: float = setting("SCHEDULER_INPUT_URL_TTL", 3600.0)
    output_slot_url_ttl_s: float = setting("SCHEDULER_OUTPUT_SLOT_URL_TTL", 3600.0)
    output_url_ttl_s: float = setting("SCHEDULER_OUTPUT_URL_TTL", 3600.0)
    event_output_url_ttl_s: float = setting("SCHEDULER_EVENT_OUTPUT_URL_TTL", 24 * 3600.0)
    # Output files an attempt may upload.
    output_slots: int = setting("SCHEDULER_OUTPUT_SLOTS", 32)
    # Executions one tenant may have dispatched or running at once.
    tenant_concurrency: int = setting("SCHEDULER_TENANT_CONCURRENCY", 8)
    # Defaults and limits of the per-request timeouts.
    queue_timeout_s: float = setting("SCHEDULER_QUEUE_TIMEOUT", 3600.0)
    run_timeout_s: float = setting("SCHEDULER_RUN_TIMEOUT", 3600.0)
    # From acceptance to a terminal state, every wait, attempt and retry included.
    execution_timeout_s: float = setting("SCHEDULER_EXECUTION_TIMEOUT", 24 * 3600.0)
    max_timeout_s: float = setting("SCHEDULER_MAX_TIMEOUT", 7 * 24 * 3600.0)
    # How often the dispatcher and reaper look again when nothing woke them.
    poll_interval_s: float = setting("SCHEDULER_POLL_INTERVAL", 1.0)
    reaper_interval_s: float = setting("SCHEDULER_REAPER_INTERVAL", 1.0)
    # How long in-flight attempts may finish after SIGTERM before they are left to the reaper.
    shutdown_grace_s: float = setting("SCHEDULER_SHUTDOWN_GRACE", 10.0)
    # How long the scheduler waits for an executor to answer Cancel.
    cancel_timeout_s: float = setting("SCHEDULER_CANCEL_TIMEOUT", 5.0)
    # How long published outbox rows are kept (JetStream deduplicates within 2 minutes).
    outbox_retention_s: float = setting("SCHEDULER_OUTBOX_RETENTION", 3600.0)
    # Circuit breakers per provider and per executor.
    provider_breaker: BreakerPolicy = group(PROVIDER_BREAKER, prefix="SCHEDULER_PROVIDER_BREAKER_")
    executor_breaker: BreakerPolicy = group(EXECUTOR_BREAKER, prefix="SCHEDULER_EXECUTOR_BREAKER_")
    # What GPU time costs per provider and GPU type, with each provider's billing rounding.
    prices: PriceTable = setting("SCHEDULER_PRICES", DEFAULT_PRICES, parse=_prices)
    # How often the autoscaler decides (0: never), and how.
    autoscale_interval_s: float = setting("SCHEDULER_AUTOSCALE_INTERVAL", 15.0)
    autoscale: ScalePolicy = group(prefix="SCHEDULER_AUTOSCALE_", factory=ScalePolicy)
    # Input uploads (CreateInputUpload): how long the presigned PUT URL works, how long the
    # upload may be named by executions before the sweep deletes it, the largest file (one
    # S3 PUT takes at most 5 GiB), and how often the sweep runs (0: never).
    upload_url_ttl_s: float = setting("SCHEDULER_UPLOAD_URL_TTL", 3600.0)
    upload_ttl_s: float = setting("SCHEDULER_UPLOAD_TTL", 24 * 3600.0)
    upload_max_bytes: int = setting("SCHEDULER_UPLOAD_MAX_BYTES", 5 << 30)
    upload_sweep_interval_s: float = setting("SCHEDULER_UPLOAD_SWEEP_INTERVAL", 60.0)
    # The environment of executions that name none (the gateway sends the tenant's default).
    default_environment: str = setting("DEFAULT_ENVIRONMENT", NATIVE)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_attempts > self.max_attempts_limit:
            raise ConfigError("max_attempts must be between 1 and max_attempts_limit")
        if self.lease_s < 2 * self.heartbeat_interval_s:
            # A lease is renewed only while the executor heartbeats; with fewer than two
            # heartbeats per lease one late heartbeat would lose it.
            raise ConfigError("lease_s must be at least twice heartbeat_interval_s")
        if self.output_slots < 1 or self.output_slots > 999:
            raise ConfigError("output_slots must be between 1 and 999")
        if self.tenant_concurrency < 1:
            raise ConfigError("tenant_concurrency must be at least 1")
        if min(self.backoff_base_s, self.backoff_max_s, self.poll_interval_s) <= 0:
            raise ConfigError("backoff and poll intervals must be positive")
        if not 0 < self.upload_url_ttl_s <= self.upload_ttl_s:
            # The sweep deletes an upload at its expiry: a URL that outlived it could stage
            # a file nobody would ever delete.
            raise ConfigError("upload_url_ttl_s must be positive and at most upload_ttl_s")
        if not 0 < self.upload_max_bytes <= 5 << 30:
            raise ConfigError("upload_max_bytes must be between 1 and 5 GiB (one S3 PUT)")
        problem = name_problem(self.default_environment)
        if problem:
            raise ConfigError(f"COMFYFLEET_DEFAULT_ENVIRONMENT: {problem}")

    @property
    def executor_lapse_s(self) -> float:
        """An executor that has not heartbeated for this long is gone."""
        return 3 * self.heartbeat_interval_s


@dataclass(frozen=True)
class Config(Settings):
    """Everything the scheduler process needs."""

    grpc_addr: str = setting("GRPC_ADDR", "127.0.0.1:50052")
    database: DatabaseConfig = group(factory=DatabaseConfig)
    nats: NatsConfig = group(factory=NatsConfig)
    s3: S3Config = group(factory=S3Config)
    settings: SchedulerSettings = group(factory=SchedulerSettings)
    # The PostgreSQL schema of the scheduler's tables; tests give each scheduler its own.
    schema: str = setting("SCHEDULER_SCHEMA", "scheduler")
    # This replica's name, in logs and the NATS connection name.
    replica: str = setting("SCHEDULER_REPLICA", "scheduler")
    # The NATS subject circuit breaker changes are published on (CircuitBreakerEvent).
    breaker_subject: str = setting("SCHEDULER_BREAKER_SUBJECT", "comfyfleet.scheduler.breakers")
    # The RunPod serverless endpoint work may go to; disabled without an endpoint URL or id.
    runpod: RunpodConfig = group(factory=RunpodConfig)
    # The ECS service of GPU executors the autoscaler sizes; disabled without one.
    ecs: EcsConfig = group(factory=EcsConfig)
    # The models service that resolves a workflow's models at submit time; "" turns model
    # resolution off (a platform without a model registry).
    models_addr: str = setting("MODELS_ADDR", "")

    def scale_policies(self) -> dict[str, ScalePolicy]:
        """The autoscaling policy of each scaled provider: the shared one, with the
        provider's own bounds and warm pool."""
        base = self.settings.autoscale
        return {
            "ecs": replace(
                base,
                min_replicas=self.ecs.min_replicas,
                max_replicas=self.ecs.max_replicas,
                warm_pool=min(self.ecs.warm_pool, self.ecs.max_replicas),
            ),
            "runpod": replace(
                base,
                min_replicas=0,
                max_replicas=self.runpod.max_in_flight,
                warm_pool=min(self.runpod.warm_pool, self.runpod.max_in_flight),
            ),
        }
