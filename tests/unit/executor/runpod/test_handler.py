"""The RunPod handler's input, chunks and job counting, with the real engine in-process."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc import code_pb2

from comfyfleet.common.environments import object_info_text
from comfyfleet.common.errors import InvalidArgument, error_info
from comfyfleet.executor.v1 import executor_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from services.executor import runpod_worker
from services.executor.config import Config
from services.executor.engine import Engine, build_engine
from services.executor.runpod_worker import RunpodWorker, chunk_of, execute_request_of
from tests.support.paths import comfyui_ref

A_TINY = (comfyui_ref() / "workflows" / "a_tiny.json").read_text()


def test_the_execute_request_is_read_from_proto3_json_in_either_spelling() -> None:
    camel = execute_request_of({"execute_request": {"executionId": "e1", "attempt": 2}})
    snake = execute_request_of({"execute_request": {"execution_id": "e1", "attempt": 2}})

    assert camel == snake == executor_pb2.ExecuteRequest(execution_id="e1", attempt=2)


@pytest.mark.parametrize(
    "job_input",
    [None, "text", {}, {"execute_request": "{}"}, {"execute_request": {"attempt": "two"}}],
)
def test_a_job_without_a_readable_request_is_invalid(job_input: Any) -> None:
    with pytest.raises(InvalidArgument) as refused:
        execute_request_of(job_input)

    assert [v.field for v in refused.value.violations] == ["input.execute_request"]


def test_chunks_parse_back_into_the_same_update() -> None:
    update = executor_pb2.ExecuteUpdate(
        node=executor_pb2.NodeUpdate(state=executor_pb2.NODE_STATE_DONE, seconds=0.5)
    )
    update.node.progress.node_id = "3"

    chunk = chunk_of(update)

    assert chunk["node"]["state"] == "NODE_STATE_DONE"
    assert json_format.ParseDict(chunk, executor_pb2.ExecuteUpdate()) == update


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return build_engine("native", "cpu", tmp_path_factory.mktemp("engine"))


def worker(engine: Engine, tmp_path: Path, **settings: Any) -> RunpodWorker:
    cfg = Config(device="cpu", work_dir=tmp_path, **settings)
    return RunpodWorker(cfg, engine, "pod-1", {})


async def run(rp: RunpodWorker, execution_id: str) -> list[executor_pb2.ExecuteUpdate]:
    request = executor_pb2.ExecuteRequest(
        execution_id=execution_id, attempt=1, workflow_json=A_TINY
    )
    job = {"id": f"job-{execution_id}", "input": {"execute_request": chunk_of(request)}}
    chunks: AsyncIterator[dict[str, Any]] = rp.handle(job)
    return [json_format.ParseDict(c, executor_pb2.ExecuteUpdate()) async for c in chunks]


async def test_each_job_streams_started_nodes_and_its_end(engine: Engine, tmp_path: Path) -> None:
    updates = await run(worker(engine, tmp_path), "e1")

    assert updates[0].started == executor_pb2.Started(executor_id="pod-1", device="cpu")
    assert {u.WhichOneof("update") for u in updates[1:-1]} == {"node"}
    # No output slots were given: a failure of the attempt, still reported as an update.
    failed = updates[-1].failed
    info = error_info(failed.error)
    assert info is not None and info.reason == "OUTPUT_SLOTS_EXHAUSTED"


async def test_the_last_allowed_job_asks_the_sdk_to_refresh_the_worker(
    engine: Engine, tmp_path: Path
) -> None:
    rp = worker(engine, tmp_path, max_jobs=2)

    await run(rp, "e1")
    after_first = dict(rp.sdk_config)
    await run(rp, "e2")
    third = await run(rp, "e3")

    assert "refresh_worker" not in after_first
    assert rp.sdk_config["refresh_worker"] is True
    assert third[-1].failed.error.code == code_pb2.UNAVAILABLE
    info = error_info(third[-1].failed.error)
    assert info is not None and info.reason == "EXECUTOR_DRAINING"


def test_idle_polls_in_a_row_stop_the_worker_once(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised: list[int] = []
    monkeypatch.setattr(runpod_worker.signal, "raise_signal", raised.append)
    rp = worker(engine, tmp_path, idle_exit_polls=3)

    concurrency = [rp.on_poll(1) for _ in range(5)]

    assert concurrency == [1] * 5
    assert raised == [signal.SIGTERM]


def test_without_an_idle_limit_polls_never_stop_the_worker(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised: list[int] = []
    monkeypatch.setattr(runpod_worker.signal, "raise_signal", raised.append)
    rp = worker(engine, tmp_path)

    for _ in range(50):
        rp.on_poll(1)

    assert raised == []


async def test_a_describe_job_tells_the_environment_and_its_catalog(
    engine: Engine, tmp_path: Path
) -> None:
    rp = worker(engine, tmp_path, environment="native-rp")

    chunks = [c async for c in rp.handle({"id": "job-d", "input": {"describe": True}})]

    [chunk] = chunks
    described = json_format.ParseDict(chunk, scheduler_pb2.RegisterExecutorRequest())
    assert (described.executor.environment, described.executor.engine) == ("native-rp", "native")
    assert (described.environment.name, described.environment.engine) == ("native-rp", "native")
    assert described.object_info_json == object_info_text(NATIVE_CATALOG.object_info())
    assert rp.watch.jobs == 0, "a describe job is no attempt"
