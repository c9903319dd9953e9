"""The platform's metrics: every name in one place, with the few calls services make.

The names are the operators' contract (deploy/prometheus/alerts.yaml, the KEDA trigger, the
dashboard), exported as they are written here: through a service's own Prometheus endpoint
and through an OpenTelemetry collector whose Prometheus exporter adds no suffixes. Durations
are histograms in seconds with buckets chosen for what each measures.

Circuit breaker metrics (circuit_breaker_state, circuit_breaker_transitions) belong to the
scheduler, next to its breakers (services/scheduler/telemetry.py).

Instruments come from the global meter provider, which ``setup_telemetry`` installs; until a
process installs one (unit tests, a library user) every call here costs next to nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

_meter = metrics.get_meter("comfyfleet")

# Codes that mean the platform failed the request (HTTP 5xx), as opposed to the caller
# sending something the API refuses; only these count as api errors.
SERVER_ERROR_CODES = frozenset(
    {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED"}
)

_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RUN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- the public API (the gateway) -----------------------------------------------------------
api_request_duration = _meter.create_histogram(
    "api_request_duration_seconds",
    unit="s",
    description="Time to answer a public API call (gRPC, and REST through it).",
    explicit_bucket_boundaries_advisory=_API_BUCKETS,
)
api_requests = _meter.create_counter(
    "api_requests_total", description="Public API calls answered, by method and status code."
)
api_errors = _meter.create_counter(
    "api_errors_total",
    description="Public API calls the platform failed (INTERNAL, UNAVAILABLE, ...: HTTP 5xx).",
)
rate_limit_violations = _meter.create_counter(
    "rate_limit_violations_total", description="Calls refused by a rate limit, by tenant."
)

# --- executions -----------------------------------------------------------------------------
workflow_execution_duration = _meter.create_histogram(
    "workflow_execution_duration_seconds",
    unit="s",
    description="Time an executor spent on one attempt (inputs, models, run, outputs), by outcome.",
    explicit_bucket_boundaries_advisory=_RUN_BUCKETS,
)
workflow_queue_time = _meter.create_histogram(
    "workflow_queue_time_seconds",
    unit="s",
    description="Time an execution waited in the queue before it was dispatched.",
    explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
)
model_load_time = _meter.create_histogram(
    "model_load_time_seconds",
    unit="s",
    description="Time an attempt waited for its models: downloads on a cache miss, then loading.",
    explicit_bucket_boundaries_advisory=_LOAD_BUCKETS,
)

# --- the process ----------------------------------------------------------------------------
container_restarts = _meter.create_counter(
    "container_restarts_total",
    description="Starts of a service process; more than one in a while means restarts.",
)
# About when this process started (this module loads at start). A counter that begins at 1 in
# every new process cannot show a restart to Prometheus's increase(); a start time that
# changes can: changes(process_start_time_seconds[15m]).
_STARTED_AT = time.time()

# --- webhooks -------------------------------------------------------------------------------
webhook_deliveries = _meter.create_counter(
    "webhook_deliveries_total",
    description="Webhook delivery attempts by outcome: succeeded, retry, failed, gone (410).",
)
webhook_delivery_duration = _meter.create_histogram(
    "webhook_delivery_duration_seconds",
    unit="s",
    description="Time one webhook delivery attempt took, by outcome.",
    explicit_bucket_boundaries_advisory=_DELIVERY_BUCKETS,
)


def api_call(method: str, code: str, seconds: float) -> None:
    """One answered public API call; ``code`` is the gRPC status name ("OK", "NOT_FOUND")."""
    labels = {"method": method, "code": code}
    api_requests.add(1, labels)
    api_request_duration.record(seconds, labels)
    if code in SERVER_ERROR_CODES:
        api_errors.add(1, labels)


def rate_limited(tenant: str) -> None:
    rate_limit_violations.add(1, {"tenant": tenant})


def attempt_finished(outcome: str, seconds: float) -> None:
    workflow_execution_duration.record(seconds, {"outcome": outcome})


def dispatched(queue_seconds: float, priority: int) -> None:
    workflow_queue_time.record(max(0.0, queue_seconds), {"priority": str(priority)})


def models_loaded(seconds: float) -> None:
    model_load_time.record(seconds)


def webhook_attempt(outcome: str, seconds: float) -> None:
    labels = {"outcome": outcome}
    webhook_deliveries.add(1, labels)
    webhook_delivery_duration.record(seconds, labels)


# --- gauges read when metrics are collected -------------------------------------------------


Read = Callable[[], Iterable[Observation]]


class _Readings:
    """Observations some live objects provide, for as long as they are registered.

    Collection runs on the exporter's thread, so sources must be cheap and thread-safe to
    read: the objects hand over numbers they keep up to date, not coroutines.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[int, Read] = {}

    def __call__(self, _options: CallbackOptions) -> Iterator[Observation]:
        with self._lock:
            sources = list(self._sources.values())
        for source in sources:
            yield from source()

    def add(self, read: Read) -> int:
        with self._lock:
            key = max(self._sources, default=0) + 1
            self._sources[key] = read
        return key

    def remove(self, key: int) -> None:
        with self._lock:
            self._sources.pop(key, None)


class Reporting:
    """Sources registered with their gauges while it is entered (``with`` or ``async with``)."""

    def __init__(self, sources: list[tuple[_Readings, Read]]) -> None:
        self._sources = sources
        self._keys: list[tuple[_Readings, int]] = []

    def __enter__(self) -> Reporting:
        self._keys = [(gauge, gauge.add(read)) for gauge, read in self._sources]
        return self

    def __exit__(self, *exc: object) -> None:
        for gauge, key in self._keys:
            gauge.remove(key)
        self._keys = []

    async def __aenter__(self) -> Reporting:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)


_queue_depth = _Readings()
_gpu_utilization = _Readings()
_cache_hit_rate = _Readings()

_meter.create_observable_gauge(
    "queue_depth",
    callbacks=[_queue_depth],
    description="Executions waiting to be dispatched, by priority and tenant.",
)
_meter.create_observable_gauge(
    "gpu_utilization_percent",
    callbacks=[_gpu_utilization],
    unit="%",
    description="How busy an executor's GPU is (NVML), by device.",
)
_meter.create_observable_gauge(
    "cache_hit_rate",
    callbacks=[_cache_hit_rate],
    description="Share of an executor's model requests its local cache served (0..1).",
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory(_options: CallbackOptions) -> Iterator[Observation]:
    try:
        yield Observation(_rss_bytes())
    except OSError:
        return  # not Linux: nothing to report


_meter.create_observable_gauge(
    "process_start_time_seconds",
    callbacks=[lambda _options: [Observation(_STARTED_AT)]],
    unit="s",
    description="When the service process started, in seconds since the epoch.",
)
_meter.create_observable_gauge(
    "memory_usage_bytes",
    callbacks=[_memory],
    unit="By",
    description="Resident memory of the service process.",
)


@dataclass
class QueueGauge:
    """The queue depth one scheduler last sampled, keyed by (priority, tenant, environment):
    each environment's pool scales on its own queue."""

    depths: Mapping[tuple[int, str, str], int]

    def observations(self) -> list[Observation]:
        return [
            Observation(
                depth, {"priority": str(priority), "tenant": tenant, "environment": environment}
            )
            for (priority, tenant, environment), depth in self.depths.items()
        ]


def queue_depth_source(gauge: QueueGauge) -> Reporting:
    """Reports ``gauge`` as queue_depth while entered (the scheduler refreshes it)."""
    return Reporting([(_queue_depth, gauge.observations)])


def executor_source(
    device: str,
    gpu_utilization: Callable[[], float | None],
    cache_counts: Callable[[], tuple[int, int]],
) -> Reporting:
    """Reports an executor's GPU utilisation and model cache hit rate while entered.

    ``gpu_utilization`` gives NVML's percent, None where there is no GPU to read;
    ``cache_counts`` gives (hits, misses) since the executor started.
    """

    def gpu() -> list[Observation]:
        value = gpu_utilization()
        return [] if value is None else [Observation(value, {"device": device})]

    def cache() -> list[Observation]:
        hits, misses = cache_counts()
        if hits + misses == 0:
            return []
        return [Observation(hits / (hits + misses), {"cache": "models"})]

    return Reporting([(_gpu_utilization, gpu), (_cache_hit_rate, cache)])
