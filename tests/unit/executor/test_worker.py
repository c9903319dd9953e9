"""The single slot and the attempt lifecycle, with a scripted engine on the real thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from google.rpc import code_pb2

from comfyfleet.common.errors import ResourceExhausted, Unavailable
from comfyfleet.workflow.runner import CancelToken
from services.executor.attempt import (
    AttemptDeps,
    AttemptSpec,
    Completed,
    Failed,
    Started,
    Update,
)
from services.executor.engine import (
    EngineJob,
    EngineResult,
    NodeEvent,
    NodeState,
    OnEvent,
    RunInterrupted,
)
from services.executor.models import ModelCache
from services.executor.worker import Worker
from tests.support.eventually import eventually


class ScriptedEngine:
    """Emits one RUNNING event, then waits for ``release`` (or, when ``obeys``, a cancel)."""

    name = "scripted"
    device = "cpu"

    def __init__(self, *, obeys: bool = True) -> None:
        self.obeys = obeys
        self.release = threading.Event()
        self.started = threading.Event()

    def node_types(self) -> Sequence[str]:
        return ["EmptyImage"]

    def run(self, job: EngineJob, on_event: OnEvent, cancel: CancelToken) -> EngineResult:
        on_event(NodeEvent(NodeState.RUNNING, "1", "EmptyImage", 0, 1))
        self.started.set()
        while not self.release.wait(0.005):
            if self.obeys and cancel.cancelled:
                raise RunInterrupted("cancelled")
        on_event(NodeEvent(NodeState.DONE, "1", "EmptyImage", 1, 1, seconds=0.1))
        return EngineResult((), ())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_worker(engine: ScriptedEngine, tmp_path: Path, http: aiohttp.ClientSession) -> Worker:
    thread = concurrent.futures.ThreadPoolExecutor(1)
    models = ModelCache(tmp_path / "models", 1 << 20)
    return Worker(AttemptDeps("exec-1", engine, thread, http, models, tmp_path, 0.2))


def spec(execution_id: str = "exe-1", timeout: float | None = None) -> AttemptSpec:
    return AttemptSpec(execution_id, 1, "t", "{}", (), (), (), timeout)


async def drain_updates(stream: AsyncIterator[Update]) -> list[Update]:
    return [u async for u in stream]


async def wait_started(engine: ScriptedEngine) -> None:
    async def check() -> None:
        assert engine.started.is_set()

    await eventually(check)


async def test_an_attempt_streams_started_nodes_and_completed(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    engine = ScriptedEngine()
    engine.release.set()
    worker = make_worker(engine, tmp_path, http)

    updates = await drain_updates(worker.start(spec()).updates())

    assert updates[0] == Started("exec-1", "cpu")
    assert [u.state for u in updates if isinstance(u, NodeEvent)] == [
        NodeState.RUNNING,
        NodeState.DONE,
    ]
    assert isinstance(updates[-1], Completed)
    assert worker.current is None


async def test_the_slot_is_taken_until_the_attempt_ends(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    engine = ScriptedEngine()
    worker = make_worker(engine, tmp_path, http)
    attempt = worker.start(spec())

    with pytest.raises(ResourceExhausted):
        worker.start(spec("exe-2"))
    engine.release.set()
    await drain_updates(attempt.updates())

    assert worker.cancel("exe-1", 1) is False
    engine.release.clear()
    second = worker.start(spec("exe-2"))
    engine.release.set()
    assert isinstance((await drain_updates(second.updates()))[-1], Completed)


async def test_a_run_that_ignores_its_cancel_still_holds_the_slot(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    engine = ScriptedEngine(obeys=False)
    worker = make_worker(engine, tmp_path, http)
    attempt = worker.start(spec())
    await wait_started(engine)

    assert worker.cancel("exe-1", 1) is True
    updates = await drain_updates(attempt.updates())

    final = updates[-1]
    assert isinstance(final, Failed) and final.error.to_status().code == code_pb2.CANCELLED
    with pytest.raises(ResourceExhausted):
        worker.start(spec("exe-2"))
    engine.release.set()

    async def free() -> None:
        assert worker.current is None

    await eventually(free)


async def test_the_run_timeout_ends_the_attempt(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    worker = make_worker(ScriptedEngine(), tmp_path, http)

    updates = await drain_updates(worker.start(spec(timeout=0.05)).updates())

    final = updates[-1]
    assert isinstance(final, Failed) and final.retryable
    assert final.error.to_status().code == code_pb2.DEADLINE_EXCEEDED


async def test_leaving_the_stream_early_cancels_the_attempt(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    engine = ScriptedEngine()
    worker = make_worker(engine, tmp_path, http)
    attempt = worker.start(spec())
    stream = attempt.updates()

    assert isinstance(await anext(stream), Started)
    await stream.aclose()

    await asyncio.wait_for(attempt.task, 5)
    assert worker.current is None


async def test_draining_refuses_new_work_and_hands_back_the_running_attempt(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    engine = ScriptedEngine()
    worker = make_worker(engine, tmp_path, http)
    attempt = worker.start(spec())
    await wait_started(engine)
    collecting = asyncio.create_task(drain_updates(attempt.updates()))

    await worker.drain(0.05)

    final = (await collecting)[-1]
    assert isinstance(final, Failed) and final.retryable
    with pytest.raises(Unavailable):
        worker.start(spec("exe-2"))
