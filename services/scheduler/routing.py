"""Choosing where an attempt runs: among free executors whose circuit breakers let work
through, cheaper providers first, then the best-scored executor. Pure logic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.scheduler.breaker import AttemptPermit, Breakers
from services.scheduler.cost import PriceTable
from services.scheduler.records import Placement


@dataclass(frozen=True)
class Weights:
    """How much each signal counts in an executor's score; the source design's defaults."""

    free_memory: float = 0.4
    cache_hits: float = 0.3
    load: float = 0.2
    run_time: float = 0.1


@dataclass(frozen=True)
class FreeExecutor:
    """A live executor with at least one free slot, as the claim sees it."""

    placement: Placement
    node_types: frozenset[str]
    free_slots: int
    slots: int
    gpu_name: str = ""
    gpu_free_memory_bytes: int = 0
    cached_models: frozenset[str] = frozenset()
    environment: str = "native"

    def can_run(self, job: Job) -> bool:
        """An executor runs only its environment's work; one that lists no node types runs
        any of it."""
        if self.environment != job.environment:
            return False
        return not self.node_types or self.node_types.issuperset(job.node_types)

    @property
    def id(self) -> str:
        return self.placement.executor_id


@dataclass(frozen=True)
class Job:
    """What placement needs to know of an execution."""

    node_types: frozenset[str]
    # The sha256 of every model the workflow needs.
    models: frozenset[str] = frozenset()
    # Executors where an earlier attempt of it failed: a retry lands elsewhere when it can.
    failed_on: frozenset[str] = frozenset()
    # The environment it runs in.
    environment: str = "native"


@dataclass
class RunTimes:
    """Expected run time per executor: an exponentially weighted mean of the run times it
    reported, else the mean of its GPU type, else unknown."""

    alpha: float = 0.3
    _by_executor: dict[str, float] = field(default_factory=dict)
    _by_gpu: dict[str, float] = field(default_factory=dict)

    def observe(self, executor_id: str, gpu: str, seconds: float) -> None:
        if seconds <= 0:
            return
        for table, key in ((self._by_executor, executor_id), (self._by_gpu, gpu)):
            old = table.get(key)
            table[key] = seconds if old is None else old + self.alpha * (seconds - old)

    def expected(self, executor: FreeExecutor) -> float | None:
        found = self._by_executor.get(executor.id)
        return found if found is not None else self._by_gpu.get(executor.gpu_name)


def scores(
    executors: list[FreeExecutor], job: Job, run_times: RunTimes, weights: Weights
) -> dict[str, float]:
    """Each executor's score in [0, 1]: free device memory relative to the roomiest
    candidate, the share of the job's models already in its cache, its share of free slots,
    and its expected run time relative to the fastest (unknown counts half)."""
    most_memory = max((x.gpu_free_memory_bytes for x in executors), default=0)
    expected = {x.id: run_times.expected(x) for x in executors}
    fastest = min((t for t in expected.values() if t), default=None)
    out = {}
    for x in executors:
        memory = x.gpu_free_memory_bytes / most_memory if most_memory > 0 else 0.0
        hits = len(job.models & x.cached_models) / len(job.models) if job.models else 0.0
        load = x.free_slots / x.slots if x.slots > 0 else 0.0
        run = expected[x.id]
        speed = fastest / run if fastest and run else 0.5
        out[x.id] = (
            weights.free_memory * memory
            + weights.cache_hits * hits
            + weights.load * load
            + weights.run_time * speed
        )
    return out


def rank(
    executors: list[FreeExecutor],
    job: Job,
    prices: PriceTable,
    run_times: RunTimes | None = None,
    weights: Weights = Weights(),
) -> list[FreeExecutor]:
    """The executors that can run the job, best first: not one that failed it before, then
    the cheapest provider, then the highest score."""
    able = [x for x in executors if x.can_run(job)]
    score = scores(able, job, run_times or RunTimes(), weights)
    return sorted(
        able,
        key=lambda x: (
            x.id in job.failed_on,
            prices.reference(x.placement.provider),
            -score[x.id],
            x.id,
        ),
    )


@dataclass
class Router:
    """Placement with circuit breakers: only executors whose own and whose provider's
    breakers let work through are candidates, and each dispatch holds a permit of both."""

    breakers: Breakers
    prices: PriceTable
    run_times: RunTimes = field(default_factory=RunTimes)
    weights: Weights = field(default_factory=Weights)

    def candidates(self, executors: list[FreeExecutor], job: Job) -> list[FreeExecutor]:
        healthy = [x for x in executors if self.breakers.available(x.placement.provider, x.id)]
        return rank(healthy, job, self.prices, self.run_times, self.weights)

    def admit(self, placement: Placement) -> AttemptPermit | None:
        return self.breakers.acquire(placement.provider, placement.executor_id)
