"""Choosing among free executors."""

from __future__ import annotations

from services.scheduler.queue import FreeExecutor, rank
from services.scheduler.records import Placement


def executor(
    name: str, *, free: int = 1, memory: int = 0, types: tuple[str, ...] = ()
) -> FreeExecutor:
    return FreeExecutor(
        placement=Placement(name, f"{name}:1", "local"),
        node_types=frozenset(types),
        free_slots=free,
        slots=free,
        gpu_free_memory_bytes=memory,
    )


def names(ranked: list[FreeExecutor]) -> list[str]:
    return [x.placement.executor_id for x in ranked]


def test_only_executors_with_every_node_type_qualify() -> None:
    pool = [
        executor("narrow", types=("LoadImage",)),
        executor("wide", types=("LoadImage", "SaveImage")),
        executor("any"),
    ]
    assert names(rank(pool, ["LoadImage", "SaveImage"], set())) == ["any", "wide"]


def test_free_slots_then_free_memory_decide() -> None:
    pool = [
        executor("a", free=1, memory=10),
        executor("b", free=2),
        executor("c", free=1, memory=20),
    ]
    assert names(rank(pool, [], set())) == ["b", "c", "a"]


def test_an_executor_that_failed_the_execution_comes_last() -> None:
    pool = [executor("failed-before", free=4), executor("other", free=1)]
    assert names(rank(pool, [], {"failed-before"})) == ["other", "failed-before"]
