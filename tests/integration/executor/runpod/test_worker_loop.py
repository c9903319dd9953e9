"""The RunPod worker in the SDK's production loop (job-take long polls, stream and result
posts, the stop channel), against a local stand-in for RunPod's worker-facing job API.

This is how the worker runs on RunPod: cancel through the stop channel, the job limit through
``refresh_worker``, the idle limit through idle job polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from comfyfleet.common.storage import ObjectStore
from comfyfleet.executor.v1 import executor_pb2
from tests.integration.executor.conftest import make_job, workflow_text
from tests.integration.executor.runpod.conftest import (
    START_TIMEOUT_S,
    job_input,
    updates_of,
    worker_env,
    worker_process,
)
from tests.support.eventually import eventually

POD = "pod-loop-test"
# RunPod holds its long polls open for a while; a short hold keeps the test quick.
POLL_HOLD_S = 0.2


@dataclass
class FakeRunpod:
    """Hands out queued jobs, records what the worker posts back, and sends stop signals."""

    jobs: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    stops: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    streamed: dict[str, list[Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    takes: int = 0
    # A URL that never answers: an input download that hangs until the attempt is stopped.
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    base: str = ""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/job-take/{pod}", self.take),
            web.get("/job-stop/{pod}", self.stop_signals),
            web.post("/job-stream/{pod}/{job}", self.stream),
            web.post("/job-done/{pod}/{job}", self.done),
            web.get("/stall", self.stall),
        ]

    async def take(self, request: web.Request) -> web.StreamResponse:
        self.takes += 1
        with contextlib.suppress(TimeoutError):
            job = await asyncio.wait_for(self.jobs.get(), POLL_HOLD_S)
            return web.json_response(job)
        return web.Response(status=204)

    async def stop_signals(self, request: web.Request) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            job_id = await asyncio.wait_for(self.stops.get(), POLL_HOLD_S)
            return web.json_response({"jobsToStop": [job_id]})
        return web.Response(status=204)

    async def stream(self, request: web.Request) -> web.Response:
        posted = json.loads(await request.text())
        self.streamed.setdefault(request.match_info["job"], []).append(posted["output"])
        return web.Response()

    async def done(self, request: web.Request) -> web.Response:
        self.results[request.match_info["job"]] = json.loads(await request.text())
        return web.Response()

    async def stall(self, request: web.Request) -> web.Response:
        self.stalled.set()
        await asyncio.Event().wait()
        return web.Response()

    def env(self) -> dict[str, str]:
        return {
            "RUNPOD_POD_ID": POD,
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.base}/job-take/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.base}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
            # The SDK's fitness checks dial 8.8.8.8 and probe GPUs; neither exists here.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
        }

    def submit(self, job_id: str, request: executor_pb2.ExecuteRequest) -> None:
        self.jobs.put_nowait({"id": job_id, "input": job_input(request)})


@pytest.fixture
async def runpod() -> AsyncIterator[FakeRunpod]:
    fake = FakeRunpod()
    app = web.Application()
    app.add_routes(fake.routes())
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.base = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def _exit_code(process: asyncio.subprocess.Process, log: Path) -> int:
    try:
        return await asyncio.wait_for(process.wait(), START_TIMEOUT_S)
    except TimeoutError:
        logs = await asyncio.to_thread(log.read_text)
        raise AssertionError(f"the worker did not exit:\n{logs[-4000:]}") from None


async def test_a_stop_signal_cancels_the_running_job_and_the_job_limit_ends_the_worker(
    runpod: FakeRunpod, store: ObjectStore, tmp_path: Path
) -> None:
    stuck = await make_job(store, workflow_text("r01_invert"))
    stuck.request.inputs.add(name="shapes.png", url=f"{runpod.base}/stall")
    tiny = await make_job(store, workflow_text("a_tiny"))
    log = tmp_path / "worker.log"
    env = {**worker_env(tmp_path / "work", max_jobs="2"), **runpod.env()}

    async with worker_process(env, log_file=log) as process:
        runpod.submit("job-stuck", stuck.request)
        await eventually(_stalled(runpod), timeout=START_TIMEOUT_S)
        runpod.stops.put_nowait("job-stuck")
        runpod.submit("job-tiny", tiny.request)
        code = await _exit_code(process, log)

    logs = log.read_text()
    assert code == 0, logs[-4000:]
    started = updates_of(runpod.streamed["job-stuck"])
    assert [u.WhichOneof("update") for u in started] == ["started"]
    assert "job-stuck" not in runpod.results, "a stopped job reports nothing"
    assert "STREAM_CLOSED" in logs
    # The slot was free again for the next job, which was the worker's last.
    result = runpod.results["job-tiny"]
    assert result.get("stopPod") is True
    chunks = result["output"]
    assert chunks == runpod.streamed["job-tiny"]
    assert updates_of(chunks)[-1].WhichOneof("update") == "completed"
    assert await store.get(tiny.output_keys[0])


def _stalled(runpod: FakeRunpod) -> Any:
    async def check() -> None:
        assert runpod.stalled.is_set(), "the input download has not started"

    return check


async def test_after_its_idle_polls_the_worker_leaves(
    runpod: FakeRunpod, store: ObjectStore, tmp_path: Path
) -> None:
    tiny = await make_job(store, workflow_text("a_tiny"))
    log = tmp_path / "worker.log"
    warmup = workflow_text("a_tiny")
    settings = {"idle_exit_polls": "3", "warmup_workflow": warmup}
    env = {**worker_env(tmp_path / "work", **settings), **runpod.env()}
    runpod.submit("job-1", tiny.request)

    async with worker_process(env, log_file=log) as process:
        code = await _exit_code(process, log)

    logs = log.read_text()
    assert code == 0, logs[-4000:]
    assert "3 job polls in a row found no work" in logs
    assert "warmup workflow ran in" in logs
    result = runpod.results["job-1"]
    assert "stopPod" not in result
    # The warmup ran the same workflow: the job takes its nodes from the node cache, but its
    # output node saves the job's own file (issue 11: files embed their own run's prompt).
    completed = updates_of(result["output"])[-1].completed
    assert sorted(completed.cached_nodes) == ["1", "2"]
    assert await store.get(tiny.output_keys[0])
    assert runpod.takes >= 4


async def test_a_worker_whose_warmup_fails_exits_non_zero_before_taking_jobs(
    runpod: FakeRunpod, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    broken = '{"1": {"class_type": "NoSuchNode", "inputs": {}}}'
    env = {**worker_env(tmp_path / "work", warmup_workflow=broken), **runpod.env()}

    async with worker_process(env, log_file=log) as process:
        code = await _exit_code(process, log)

    logs = log.read_text()
    assert code == 1
    assert "worker not started: the warmup workflow failed" in logs and "NoSuchNode" in logs
    assert runpod.takes == 0
