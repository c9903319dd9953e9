"""The scheduler's settings, read once from ``COMFYFLEET_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    NatsConfig,
    S3Config,
    env_bool,
    env_float,
    env_int,
    env_str,
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


def breaker_from_env(prefix: str, d: BreakerPolicy) -> BreakerPolicy:
    """``COMFYFLEET_<prefix>_WINDOW_S``, ``_MINIMUM_CALLS``, ``_FAILURE_RATE``,
    ``_SLOW_CALL_S``, ``_SLOW_CALL_RATE``, ``_OPEN_WAIT_S``, ``_HALF_OPEN_PROBES``,
    ``_HALF_OPEN_MAX_S``."""
    return BreakerPolicy(
        window_s=env_float(f"{prefix}_WINDOW_S", d.window_s),
        minimum_calls=env_int(f"{prefix}_MINIMUM_CALLS", d.minimum_calls),
        failure_rate=env_float(f"{prefix}_FAILURE_RATE", d.failure_rate),
        slow_call_s=env_float(f"{prefix}_SLOW_CALL_S", d.slow_call_s),
        slow_call_rate=env_float(f"{prefix}_SLOW_CALL_RATE", d.slow_call_rate),
        open_wait_s=env_float(f"{prefix}_OPEN_WAIT_S", d.open_wait_s),
        half_open_probes=env_int(f"{prefix}_HALF_OPEN_PROBES", d.half_open_probes),
        half_open_max_s=env_float(f"{prefix}_HALF_OPEN_MAX_S", d.half_open_max_s),
    )


def scale_policy_from_env(d: ScalePolicy) -> ScalePolicy:
    """``COMFYFLEET_SCHEDULER_AUTOSCALE_*``: the policy every scaled provider shares (each
    provider sets its own minimum, maximum and warm pool)."""
    p = "SCHEDULER_AUTOSCALE"
    return ScalePolicy(
        target_queue_depth=env_float(f"{p}_TARGET_QUEUE_DEPTH", d.target_queue_depth),
        scale_up_queue_depth=env_float(f"{p}_UP_QUEUE_DEPTH", d.scale_up_queue_depth),
        scale_down_queue_depth=env_float(f"{p}_DOWN_QUEUE_DEPTH", d.scale_down_queue_depth),
        target_wait_s=env_float(f"{p}_TARGET_WAIT_S", d.target_wait_s),
        scale_up_wait_s=env_float(f"{p}_UP_WAIT_S", d.scale_up_wait_s),
        scale_down_wait_s=env_float(f"{p}_DOWN_WAIT_S", d.scale_down_wait_s),
        scale_up_window_s=env_float(f"{p}_UP_WINDOW_S", d.scale_up_window_s),
        scale_up_step=env_int(f"{p}_UP_STEP", d.scale_up_step),
        scale_down_window_s=env_float(f"{p}_DOWN_WINDOW_S", d.scale_down_window_s),
        scale_down_step=env_int(f"{p}_DOWN_STEP", d.scale_down_step),
        max_idle_s=env_float(f"{p}_MAX_IDLE_S", d.max_idle_s),
        scale_to_zero=env_bool(f"{p}_SCALE_TO_ZERO", d.scale_to_zero),
    )


def _prices_from_env(default: PriceTable) -> PriceTable:
    """``COMFYFLEET_SCHEDULER_PRICES``: the price table as JSON text, or ``@<path>`` of a
    JSON file (see ``PriceTable.parse``). The providers it names replace the defaults' entries
    for them; the others keep their default prices (so a provider left out never looks free
    to the router)."""
    raw = env_str("SCHEDULER_PRICES", "")
    if not raw:
        return default
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as err:
            raise ConfigError(f"COMFYFLEET_SCHEDULER_PRICES: {err}") from None
    return PriceTable({**default.providers, **PriceTable.parse(raw).providers})


@dataclass(frozen=True)
class SchedulerSettings:
    """How the queue, leases, retries and timeouts behave."""

    # Attempts an execution may use for infrastructure failures when the request sets none.
    max_attempts: int = 3
    # The most attempts a request may ask for.
    max_attempts_limit: int = 10
    # An attempt's lease; renewed while its executor reports progress or heartbeats.
    lease_s: float = 30.0
    # How often executors heartbeat; a registration lapses after three missed ones.
    heartbeat_interval_s: float = 5.0
    # Retry backoff: base * 2^(n-1), capped, then jittered.
    backoff_base_s: float = 2.0
    backoff_max_s: float = 60.0
    # Presigned URL lifetimes: inputs and output slots for executors, outputs for clients
    # (Get/List), and outputs in events (webhook deliveries may retry for hours).
    input_url_ttl_s: float = 3600.0
    output_slot_url_ttl_s: float = 3600.0
    output_url_ttl_s: float = 3600.0
    event_output_url_ttl_s: float = 24 * 3600.0
    # Output files an attempt may upload.
    output_slots: int = 32
    # Executions one tenant may have dispatched or running at once.
    tenant_concurrency: int = 8
    # Defaults and limits of the per-request timeouts.
    queue_timeout_s: float = 3600.0
    run_timeout_s: float = 3600.0
    # From acceptance to a terminal state, every wait, attempt and retry included.
    execution_timeout_s: float = 24 * 3600.0
    max_timeout_s: float = 7 * 24 * 3600.0
    # How often the dispatcher and reaper look again when nothing woke them.
    poll_interval_s: float = 1.0
    reaper_interval_s: float = 1.0
    # How long in-flight attempts may finish after SIGTERM before they are left to the reaper.
    shutdown_grace_s: float = 10.0
    # How long the scheduler waits for an executor to answer Cancel.
    cancel_timeout_s: float = 5.0
    # How long published outbox rows are kept (JetStream deduplicates within 2 minutes).
    outbox_retention_s: float = 3600.0
    # Circuit breakers per provider and per executor.
    provider_breaker: BreakerPolicy = PROVIDER_BREAKER
    executor_breaker: BreakerPolicy = EXECUTOR_BREAKER
    # What GPU time costs per provider and GPU type, with each provider's billing rounding.
    prices: PriceTable = DEFAULT_PRICES
    # How often the autoscaler decides (0: never), and how.
    autoscale_interval_s: float = 15.0
    autoscale: ScalePolicy = field(default_factory=ScalePolicy)
    # Input uploads (CreateInputUpload): how long the presigned PUT URL works, how long the
    # upload may be named by executions before the sweep deletes it, the largest file (one
    # S3 PUT takes at most 5 GiB), and how often the sweep runs (0: never).
    upload_url_ttl_s: float = 3600.0
    upload_ttl_s: float = 24 * 3600.0
    upload_max_bytes: int = 5 << 30
    upload_sweep_interval_s: float = 60.0
    # The environment of executions that name none (the gateway sends the tenant's default).
    default_environment: str = NATIVE

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

    @classmethod
    def from_env(cls) -> SchedulerSettings:
        d = cls()
        return cls(
            max_attempts=env_int("SCHEDULER_MAX_ATTEMPTS", d.max_attempts),
            max_attempts_limit=env_int("SCHEDULER_MAX_ATTEMPTS_LIMIT", d.max_attempts_limit),
            lease_s=env_float("SCHEDULER_LEASE_S", d.lease_s),
            heartbeat_interval_s=env_float(
                "SCHEDULER_HEARTBEAT_INTERVAL_S", d.heartbeat_interval_s
            ),
            backoff_base_s=env_float("SCHEDULER_BACKOFF_BASE_S", d.backoff_base_s),
            backoff_max_s=env_float("SCHEDULER_BACKOFF_MAX_S", d.backoff_max_s),
            input_url_ttl_s=env_float("SCHEDULER_INPUT_URL_TTL_S", d.input_url_ttl_s),
            output_slot_url_ttl_s=env_float(
                "SCHEDULER_OUTPUT_SLOT_URL_TTL_S", d.output_slot_url_ttl_s
            ),
            output_url_ttl_s=env_float("SCHEDULER_OUTPUT_URL_TTL_S", d.output_url_ttl_s),
            event_output_url_ttl_s=env_float(
                "SCHEDULER_EVENT_OUTPUT_URL_TTL_S", d.event_output_url_ttl_s
            ),
            output_slots=env_int("SCHEDULER_OUTPUT_SLOTS", d.output_slots),
            tenant_concurrency=env_int("SCHEDULER_TENANT_CONCURRENCY", d.tenant_concurrency),
            queue_timeout_s=env_float("SCHEDULER_QUEUE_TIMEOUT_S", d.queue_timeout_s),
            run_timeout_s=env_float("SCHEDULER_RUN_TIMEOUT_S", d.run_timeout_s),
            execution_timeout_s=env_float("SCHEDULER_EXECUTION_TIMEOUT_S", d.execution_timeout_s),
            max_timeout_s=env_float("SCHEDULER_MAX_TIMEOUT_S", d.max_timeout_s),
            poll_interval_s=env_float("SCHEDULER_POLL_INTERVAL_S", d.poll_interval_s),
            reaper_interval_s=env_float("SCHEDULER_REAPER_INTERVAL_S", d.reaper_interval_s),
            shutdown_grace_s=env_float("SCHEDULER_SHUTDOWN_GRACE_S", d.shutdown_grace_s),
            cancel_timeout_s=env_float("SCHEDULER_CANCEL_TIMEOUT_S", d.cancel_timeout_s),
            outbox_retention_s=env_float("SCHEDULER_OUTBOX_RETENTION_S", d.outbox_retention_s),
            provider_breaker=breaker_from_env("SCHEDULER_PROVIDER_BREAKER", d.provider_breaker),
            executor_breaker=breaker_from_env("SCHEDULER_EXECUTOR_BREAKER", d.executor_breaker),
            prices=_prices_from_env(d.prices),
            autoscale_interval_s=env_float(
                "SCHEDULER_AUTOSCALE_INTERVAL_S", d.autoscale_interval_s
            ),
            autoscale=scale_policy_from_env(d.autoscale),
            upload_url_ttl_s=env_float("SCHEDULER_UPLOAD_URL_TTL_S", d.upload_url_ttl_s),
            upload_ttl_s=env_float("SCHEDULER_UPLOAD_TTL_S", d.upload_ttl_s),
            upload_max_bytes=env_int("SCHEDULER_UPLOAD_MAX_BYTES", d.upload_max_bytes),
            upload_sweep_interval_s=env_float(
                "SCHEDULER_UPLOAD_SWEEP_INTERVAL_S", d.upload_sweep_interval_s
            ),
            default_environment=env_str("DEFAULT_ENVIRONMENT", d.default_environment),
        )


@dataclass(frozen=True)
class Config:
    """Everything the scheduler process needs."""

    grpc_addr: str
    database: DatabaseConfig
    nats: NatsConfig
    s3: S3Config
    settings: SchedulerSettings = field(default_factory=SchedulerSettings)
    # The PostgreSQL schema of the scheduler's tables; tests give each scheduler its own.
    schema: str = "scheduler"
    # This replica's name, in logs and the NATS connection name.
    replica: str = "scheduler"
    # The NATS subject circuit breaker changes are published on (CircuitBreakerEvent).
    breaker_subject: str = "comfyfleet.scheduler.breakers"
    # The RunPod serverless endpoint work may go to; disabled without an endpoint URL or id.
    runpod: RunpodConfig = field(default_factory=RunpodConfig)
    # The ECS service of GPU executors the autoscaler sizes; disabled without one.
    ecs: EcsConfig = field(default_factory=EcsConfig)
    # The models service that resolves a workflow's models at submit time; "" turns model
    # resolution off (a platform without a model registry).
    models_addr: str = ""

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            grpc_addr=env_str("GRPC_ADDR", "127.0.0.1:50052"),
            database=DatabaseConfig.from_env(),
            nats=NatsConfig.from_env(),
            s3=S3Config.from_env(),
            settings=SchedulerSettings.from_env(),
            schema=env_str("SCHEDULER_SCHEMA", "scheduler"),
            replica=env_str("SCHEDULER_REPLICA", "scheduler"),
            breaker_subject=env_str("SCHEDULER_BREAKER_SUBJECT", "comfyfleet.scheduler.breakers"),
            runpod=RunpodConfig.from_env(),
            models_addr=env_str("MODELS_ADDR", ""),
            ecs=EcsConfig.from_env(),
        )

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
