"""A real executor on the comfyui engine: its ComfyUI (the fake) started as a process, real
S3 behind presigned URLs, and the recording scheduler it registers with."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.common.storage import ObjectStore
from comfyfleet.executor.v1 import executor_pb2
from services.executor.comfyui import ComfyUIEngine, ComfyUISettings
from services.executor.engine import build_engine
from tests.integration.executor.comfyui.conftest import FAST, fake_command, reference_file
from tests.integration.executor.conftest import (
    ExecutorUnderTest,
    SchedulerUnderTest,
    StartExecutor,
    collect,
    input_bytes,
    make_job,
    workflow_text,
)
from tests.support.eventually import eventually
from tests.support.fake_comfyui.reference import object_info
from tests.support.paths import REPO_ROOT

RUNNING = executor_pb2.NODE_STATE_RUNNING
DONE = executor_pb2.NODE_STATE_DONE

ComfyUIExecutor = Callable[..., contextlib.AbstractAsyncContextManager[ExecutorUnderTest]]


@pytest.fixture
def comfyui_executor(start_executor: StartExecutor, tmp_path: Path) -> ComfyUIExecutor:
    """``async with comfyui_executor(*fake flags) as ex``: an executor whose ComfyUI runs
    the fake with those flags; the engine is built as the executor's config would build it."""

    @contextlib.asynccontextmanager
    async def start(*flags: str) -> AsyncIterator[ExecutorUnderTest]:
        settings = replace(ComfyUISettings(command=fake_command(*flags)), **FAST)
        engine = await asyncio.to_thread(build_engine, "comfyui", "cpu", tmp_path, settings)
        assert isinstance(engine, ComfyUIEngine)
        try:
            async with start_executor(engine) as executor:
                yield executor
        finally:
            await asyncio.to_thread(engine.close)

    return start


def nodes_of(updates: list[executor_pb2.ExecuteUpdate]) -> list[executor_pb2.NodeUpdate]:
    return [u.node for u in updates if u.WhichOneof("update") == "node"]


async def test_r01_completes_with_its_output_uploaded(
    comfyui_executor: ComfyUIExecutor, store: ObjectStore, scheduler: SchedulerUnderTest
) -> None:
    async with comfyui_executor() as executor:
        job = await make_job(
            store, workflow_text("r01_invert"), inputs={"shapes.png": input_bytes("shapes.png")}
        )

        updates = await collect(executor.stub, job.request)

    assert updates[-1].WhichOneof("update") == "completed", updates[-1]
    [out] = updates[-1].completed.outputs
    assert (out.slot, out.output.node_id, out.output.kind) == (0, "3", "images")
    assert (out.output.filename, out.output.content_type) == ("r01_00001_.png", "image/png")
    uploaded = await store.get(job.output_keys[0])
    assert uploaded == reference_file("r01_invert", "node3_images_0.png")
    assert out.output.sha256 == hashlib.sha256(uploaded).hexdigest()
    assert [(n.state, n.progress.node_id) for n in nodes_of(updates)] == [
        (RUNNING, "1"),
        (DONE, "1"),
        (RUNNING, "2"),
        (DONE, "2"),
        (RUNNING, "3"),
        (DONE, "3"),
    ]
    assert nodes_of(updates)[-1].progress.nodes_done == 3
    registered = scheduler.recorder.registrations[0]
    assert registered.engine == "comfyui"
    assert sorted(registered.node_types) == sorted(object_info())


async def test_b_medium_completes_with_its_four_images_uploaded(
    comfyui_executor: ComfyUIExecutor, store: ObjectStore
) -> None:
    async with comfyui_executor() as executor:
        job = await make_job(store, workflow_text("b_medium"), slots=4)

        updates = await collect(executor.stub, job.request)

    done = updates[-1].completed
    assert [o.output.filename for o in done.outputs] == [
        f"bench_b_0000{i}_.png" for i in (1, 2, 3, 4)
    ]
    for out, key in zip(done.outputs, job.output_keys, strict=True):
        uploaded = await store.get(key)
        assert out.output.sha256 == hashlib.sha256(uploaded).hexdigest()
        assert out.output.size_bytes == len(uploaded) > 0
    assert nodes_of(updates)[-1].progress.nodes_done == 5


async def test_a_runtime_error_fails_for_good_naming_the_node(
    comfyui_executor: ComfyUIExecutor, store: ObjectStore
) -> None:
    async with comfyui_executor() as executor:
        updates = await collect(
            executor.stub, (await make_job(store, workflow_text("runtime_error"))).request
        )

    failed = updates[-1].failed
    assert failed.retryable is False
    assert failed.error.code == code_pb2.FAILED_PRECONDITION
    info = error_info(failed.error)
    assert info is not None and info.reason == "NODE_EXECUTION_FAILED"
    assert (info.metadata["node_id"], info.metadata["node_type"]) == ("3", "LatentConcat")
    assert info.metadata["exception_type"] == "RuntimeError"


async def test_a_comfyui_crash_fails_the_attempt_retryably_and_the_next_one_runs(
    comfyui_executor: ComfyUIExecutor, store: ObjectStore, tmp_path: Path
) -> None:
    flags = ("--fake-crash-at-node", "2", "--fake-crash-marker", str(tmp_path / "crashed"))
    async with comfyui_executor(*flags) as executor:
        first = await collect(
            executor.stub, (await make_job(store, workflow_text("a_tiny"))).request
        )
        again = await collect(
            executor.stub, (await make_job(store, workflow_text("a_tiny"))).request
        )

    failed = first[-1].failed
    assert failed.retryable is True
    assert failed.error.code == code_pb2.UNAVAILABLE
    info = error_info(failed.error)
    assert info is not None and info.reason == "COMFYUI_UNAVAILABLE"
    assert "exited with code 3" in failed.error.message
    assert again[-1].WhichOneof("update") == "completed"


async def test_the_process_runs_the_configured_comfyui_engine(
    scheduler: SchedulerUnderTest, tmp_path: Path
) -> None:
    """``COMFYFLEET_EXECUTOR_ENGINE=comfyui`` starts and supervises ComfyUI, then stops it."""
    env = {
        **os.environ,
        "COMFYFLEET_GRPC_ADDR": "127.0.0.1:0",
        "COMFYFLEET_SCHEDULER_ADDR": scheduler.address,
        "COMFYFLEET_EXECUTOR_ID": "exec-comfyui-process",
        "COMFYFLEET_EXECUTOR_DEVICE": "cpu",
        "COMFYFLEET_EXECUTOR_WORK_DIR": str(tmp_path / "work"),
        "COMFYFLEET_EXECUTOR_ENGINE": "comfyui",
        "COMFYFLEET_COMFYUI_COMMAND": fake_command(),
        "COMFYFLEET_ENVIRONMENT": "comfyui-fake",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.executor", cwd=REPO_ROOT, env=env
    )
    try:

        async def registered() -> None:
            assert scheduler.recorder.registrations, "not registered yet"

        await eventually(registered, timeout=60)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    executor = scheduler.recorder.registrations[0]
    assert (executor.engine, executor.environment) == ("comfyui", "comfyui-fake")
    assert set(object_info()) <= set(executor.node_types)
    assert code == 0
