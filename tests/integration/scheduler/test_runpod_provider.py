"""The RunPod transport against an HTTP server that answers as RunPod's hosted endpoint API
does where the SDK's local server cannot: /stream by GET with the new chunks of each call,
jobs RunPod itself fails or times out, jobs no worker picks up, /cancel and /health."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.devstack import free_port
from comfyfleet.executor.v1 import executor_pb2
from services.scheduler.providers.base import ProviderError
from services.scheduler.providers.runpod import RunpodConfig, RunpodProvider
from services.scheduler.records import Placement

STARTED = {"started": {"executorId": "worker-1", "device": "cuda:0"}}
COMPLETED = {"completed": {"metrics": {"executionTimeSeconds": 2.5}}}


@dataclass
class HostedEndpoint:
    """One job at a time: ``batches`` are what successive /stream calls return, then
    ``final`` is its status."""

    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    final: str = "COMPLETED"
    error: str = ""
    seen: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    url: str = ""

    async def run(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, "/run"))
        self.bodies.append(await request.json())
        assert request.headers["Authorization"] == "Bearer secret"
        return web.json_response({"id": "job-1", "status": "IN_QUEUE"})

    async def stream(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, "/stream"))
        if self.batches:
            batch = self.batches.pop(0)
            status = "IN_PROGRESS" if batch or self.batches else "IN_QUEUE"
            return web.json_response(
                {"status": status, "stream": [{"output": chunk} for chunk in batch]}
            )
        return web.json_response({"status": self.final, "stream": [], "error": self.error})

    async def cancel(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, f"/cancel/{request.match_info['job']}"))
        return web.json_response({"id": "job-1", "status": "CANCELLED"})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "jobs": {"inQueue": 4, "inProgress": 2, "completed": 10},
                "workers": {"idle": 1, "running": 2, "initializing": 1},
            }
        )


@contextlib.asynccontextmanager
async def hosted(endpoint: HostedEndpoint) -> AsyncIterator[HostedEndpoint]:
    app = web.Application()
    app.router.add_post("/run", endpoint.run)
    app.router.add_get("/stream/{job}", endpoint.stream)
    app.router.add_post("/cancel/{job}", endpoint.cancel)
    app.router.add_get("/health", endpoint.health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    endpoint.url = f"http://127.0.0.1:{port}"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


@pytest.fixture
async def provider() -> AsyncIterator[RunpodProvider]:
    cfg = RunpodConfig(
        endpoint_url="unused", api_key="secret", poll_interval_s=0.01, start_timeout_s=0.3
    )
    runpod = RunpodProvider(cfg)
    yield runpod
    await runpod.aclose()


def request() -> executor_pb2.ExecuteRequest:
    out = executor_pb2.ExecuteRequest(execution_id="exe-1", attempt=2, workflow_json="{}")
    out.run_timeout.FromSeconds(600)
    return out


async def run(
    provider: RunpodProvider, endpoint: HostedEndpoint
) -> list[executor_pb2.ExecuteUpdate]:
    placement = Placement("runpod-x", endpoint.url, "runpod", "runpod")
    async with contextlib.aclosing(provider.execute(placement, request())) as updates:
        return [update async for update in updates]


def reason(err: ProviderError) -> str:
    info = error_info(err.status)
    assert info is not None
    return info.reason


async def test_chunks_arrive_across_stream_calls_in_order(provider: RunpodProvider) -> None:
    endpoint = HostedEndpoint(batches=[[], [STARTED], [], [COMPLETED]])
    async with hosted(endpoint):
        updates = await run(provider, endpoint)
    assert [u.WhichOneof("update") for u in updates] == ["started", "completed"]
    assert updates[1].completed.metrics.execution_time_seconds == 2.5
    assert endpoint.seen == [("POST", "/run")] + [("GET", "/stream")] * 5
    [body] = endpoint.bodies
    sent = json_format.ParseDict(body["input"]["execute_request"], executor_pb2.ExecuteRequest())
    assert (sent.execution_id, sent.attempt) == ("exe-1", 2)
    assert body["policy"] == {"executionTimeout": 660_000}


@pytest.mark.parametrize(
    ("final", "code", "why"),
    [
        ("FAILED", code_pb2.UNAVAILABLE, "RUNPOD_JOB_FAILED"),
        ("CANCELLED", code_pb2.UNAVAILABLE, "RUNPOD_JOB_CANCELLED"),
        ("TIMED_OUT", code_pb2.DEADLINE_EXCEEDED, "RUNPOD_TIMED_OUT"),
    ],
)
async def test_runpods_own_failures_are_the_infrastructures(
    provider: RunpodProvider, final: str, code: int, why: str
) -> None:
    endpoint = HostedEndpoint(batches=[[STARTED]], final=final, error="worker exited")
    async with hosted(endpoint):
        with pytest.raises(ProviderError) as caught:
            await run(provider, endpoint)
    assert not caught.value.workflow_error
    assert (caught.value.status.code, reason(caught.value)) == (code, why)
    assert "worker exited" in caught.value.status.message


async def test_a_job_no_worker_starts_is_cancelled_at_the_start_timeout(
    provider: RunpodProvider,
) -> None:
    endpoint = HostedEndpoint(batches=[[]] * 1000)
    async with hosted(endpoint):
        with pytest.raises(ProviderError) as caught:
            await run(provider, endpoint)
    assert reason(caught.value) == "RUNPOD_START_TIMEOUT"
    assert endpoint.seen[-1] == ("POST", "/cancel/job-1")


async def test_an_abandoned_job_is_cancelled_and_a_finished_one_is_not(
    provider: RunpodProvider,
) -> None:
    endpoint = HostedEndpoint(batches=[[STARTED], [COMPLETED]])
    async with hosted(endpoint):
        placement = Placement("runpod-x", endpoint.url, "runpod", "runpod")
        updates = provider.execute(placement, request())
        first = await anext(updates)
        assert first.WhichOneof("update") == "started"
        assert await provider.cancel(placement, "exe-1", 2)
        assert not await provider.cancel(placement, "exe-1", 1), "not an attempt it follows"
        await updates.aclose()
        cancels = [s for s in endpoint.seen if s[1].startswith("/cancel")]
        assert cancels == [("POST", "/cancel/job-1")] * 2

        finished = HostedEndpoint(batches=[[STARTED, COMPLETED]])
        endpoint.batches, endpoint.seen = finished.batches, []
        await run(provider, endpoint)
    assert not [s for s in endpoint.seen if s[1].startswith("/cancel")]


async def test_a_chunk_that_is_no_update_is_an_infrastructure_failure(
    provider: RunpodProvider,
) -> None:
    endpoint = HostedEndpoint(batches=[[{"started": {"nonsense": 1}}]])
    async with hosted(endpoint):
        with pytest.raises(ProviderError) as caught:
            await run(provider, endpoint)
    assert reason(caught.value) == "RUNPOD_BAD_CHUNK"


async def test_health_reports_workers_and_queue(provider: RunpodProvider) -> None:
    async with hosted(HostedEndpoint()) as endpoint:
        health = await provider.health(endpoint.url)
        assert health is not None
        assert (health.workers, health.workers_running, health.jobs_in_queue) == (4, 2, 4)
        assert await provider.health(endpoint.url + "/nowhere") is None
