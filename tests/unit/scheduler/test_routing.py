"""Choosing among free executors: node types, breakers, provider prices and scores."""

from __future__ import annotations

import dataclasses

import pytest

from services.scheduler.breaker import BreakerPolicy, Breakers, Scope
from services.scheduler.cost import PriceTable, ProviderPrices
from services.scheduler.queue import pools_of
from services.scheduler.records import Placement
from services.scheduler.routing import FreeExecutor, Job, Router, RunTimes, Weights, rank, scores

GIB = 1 << 30
FREE = PriceTable({"local": ProviderPrices({"*": 0.0})})
PRICES = PriceTable(
    {
        "local": ProviderPrices({"*": 0.0}),
        "runpod": ProviderPrices({"*": 1.9}),
        "ecs": ProviderPrices({"*": 1.0, "H100": 12.0}),
    }
)


def executor(
    name: str,
    *,
    provider: str = "local",
    free: int = 1,
    slots: int = 1,
    memory: int = 0,
    types: tuple[str, ...] = (),
    cached: tuple[str, ...] = (),
    gpu: str = "",
) -> FreeExecutor:
    return FreeExecutor(
        placement=Placement(name, f"{name}:1", provider, gpu_name=gpu),
        node_types=frozenset(types),
        free_slots=free,
        slots=slots,
        gpu_name=gpu,
        gpu_free_memory_bytes=memory,
        cached_models=frozenset(cached),
    )


def job(*types: str, models: tuple[str, ...] = (), failed_on: tuple[str, ...] = ()) -> Job:
    return Job(frozenset(types), frozenset(models), frozenset(failed_on))


def test_only_executors_of_the_jobs_environment_qualify() -> None:
    pool = [
        executor("native-any"),
        dataclasses.replace(executor("sd15-any"), environment="sd15"),
        dataclasses.replace(executor("sd15-narrow", types=("KSampler",)), environment="sd15"),
    ]
    sd15 = Job(frozenset({"KSampler", "SaveImage"}), environment="sd15")

    assert names(rank(pool, job("SaveImage"), FREE)) == ["native-any"]
    assert names(rank(pool, sd15, FREE)) == ["sd15-any"]


def test_a_claims_pools_are_its_free_executors_environments() -> None:
    pool = [
        executor("a", types=("LoadImage",)),
        executor("b", types=("SaveImage", "LoadImage")),
        dataclasses.replace(executor("c"), environment="sd15"),
        dataclasses.replace(executor("d", types=("KSampler",)), environment="sd15"),
    ]

    assert pools_of(pool) == (
        ["native", "sd15"],
        [False, True],
        ['["LoadImage", "SaveImage"]', '["KSampler"]'],
    )


def names(ranked: list[FreeExecutor]) -> list[str]:
    return [x.id for x in ranked]


def test_only_executors_with_every_node_type_qualify() -> None:
    pool = [
        executor("narrow", types=("LoadImage",)),
        executor("wide", types=("LoadImage", "SaveImage")),
        executor("any"),
    ]
    assert names(rank(pool, job("LoadImage", "SaveImage"), FREE)) == ["any", "wide"]


def test_the_score_weighs_memory_cache_load_and_run_time_as_the_design_says() -> None:
    assert Weights() == Weights(free_memory=0.4, cache_hits=0.3, load=0.2, run_time=0.1)
    run_times = RunTimes()
    run_times.observe("fast", "L4", 10.0)
    run_times.observe("slow", "T4", 40.0)
    pool = [
        executor("roomy", memory=80 * GIB, slots=2, free=1, gpu="H100"),
        executor("fast", memory=40 * GIB, cached=("m1",), gpu="L4"),
        executor("slow", memory=20 * GIB, cached=("m1", "m2"), gpu="T4"),
    ]
    got = scores(pool, job(models=("m1", "m2")), run_times, Weights())
    # roomy: all memory, half its slots, unknown run time (counts half).
    assert got["roomy"] == pytest.approx(0.4 * 1 + 0.3 * 0 + 0.2 * 0.5 + 0.1 * 0.5)
    assert got["fast"] == pytest.approx(0.4 * 0.5 + 0.3 * 0.5 + 0.2 * 1 + 0.1 * 1)
    assert got["slow"] == pytest.approx(0.4 * 0.25 + 0.3 * 1 + 0.2 * 1 + 0.1 * 0.25)
    assert names(rank(pool, job(models=("m1", "m2")), FREE, run_times)) == [
        "fast",
        "slow",
        "roomy",
    ]


def test_model_cache_hits_can_outweigh_free_memory() -> None:
    pool = [executor("empty", memory=24 * GIB), executor("warm", memory=16 * GIB, cached=("m",))]
    assert names(rank(pool, job(models=("m",)), FREE)) == ["warm", "empty"]
    assert names(rank(pool, job(), FREE)) == ["empty", "warm"]


def test_cheaper_providers_come_first_whatever_the_score() -> None:
    pool = [
        executor("pod", provider="runpod", memory=80 * GIB),
        executor("task", provider="ecs", memory=1 * GIB),
        executor("box", provider="local"),
    ]
    assert names(rank(pool, job(), PRICES)) == ["box", "task", "pod"]


def test_an_executor_that_failed_the_execution_comes_last() -> None:
    pool = [executor("failed-before", memory=GIB), executor("other")]
    assert names(rank(pool, job(failed_on=("failed-before",)), FREE)) == [
        "other",
        "failed-before",
    ]


def test_run_times_fall_back_to_the_gpu_type() -> None:
    run_times = RunTimes(alpha=0.5)
    run_times.observe("a", "L4", 10.0)
    run_times.observe("a", "L4", 20.0)
    assert run_times.expected(executor("a", gpu="L4")) == 15.0
    assert run_times.expected(executor("new", gpu="L4")) == 15.0
    assert run_times.expected(executor("other", gpu="H100")) is None
    run_times.observe("a", "L4", 0.0)  # nothing measured: nothing learnt
    assert run_times.expected(executor("a", gpu="L4")) == 15.0


def test_the_router_offers_only_executors_whose_breakers_let_work_through() -> None:
    policy = BreakerPolicy(minimum_calls=1, open_wait_s=60.0)
    breakers = Breakers(policy, policy)
    router = Router(breakers, PRICES)
    broken = breakers.acquire("ecs", "bad")
    assert broken is not None
    broken.failure(0.1)
    assert breakers.get(Scope.EXECUTOR, "bad").state.value == "OPEN"
    pool = [
        executor("bad", provider="ecs"),
        executor("good", provider="ecs"),
        executor("pod", provider="runpod"),
    ]
    assert names(router.candidates(pool, job())) == ["pod"], "the ecs provider opened too"
    permit = router.admit(pool[2].placement)
    assert permit is not None
    permit.success(0.1)
