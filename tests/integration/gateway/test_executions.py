"""Creating executions through the gateway with a real scheduler behind it: inputs fetched
from URLs behind the SSRF guard, and idempotent creates over gRPC and REST."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_status import rpc_status

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.config import DatabaseConfig, NatsConfig
from comfyfleet.common.errors import field_violations
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from services.gateway.config import Limits
from services.gateway.ratelimit import RateLimit
from services.scheduler.config import Config as SchedulerConfig
from services.scheduler.server import running_scheduler
from tests.integration.gateway.conftest import Gw, StartGateway
from tests.integration.scheduler.conftest import FAST
from tests.support.infra import NatsInfo, NatsNames, S3Info
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
WORKFLOW = (REF / "workflows" / "r01_invert.json").read_text()
PNG = (REF / "inputs" / "shapes.png").read_bytes()
MAX_FETCH = len(PNG) + 100


@dataclass
class Files:
    """A small HTTP server with input files, counting downloads."""

    url: str
    hits: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def files() -> AsyncIterator[Files]:
    served = Files("")

    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        served.hits[name] = served.hits.get(name, 0) + 1
        if name == "shapes.png":
            return web.Response(body=PNG, content_type="image/png")
        if name == "big.png":
            return web.Response(body=b"\0" * (MAX_FETCH + 1), content_type="image/png")
        if name == "hop.png":
            raise web.HTTPFound("/shapes.png")
        if name == "chunked.png":  # no Content-Length: the limit must hold while reading
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(4):
                await response.write(b"\0" * (MAX_FETCH // 2))
            await response.write_eof()
            return response
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield served
    finally:
        await runner.cleanup()


@pytest.fixture
async def scheduler_addr(
    fresh_database: str,
    nats_server: NatsInfo,
    nats_names: NatsNames,
    s3_server: S3Info,
    s3_bucket: str,
) -> AsyncIterator[str]:
    cfg = SchedulerConfig(
        grpc_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        nats=NatsConfig(nats_server.url, nats_names.stream, nats_names.subject_prefix),
        s3=s3_server.config(s3_bucket),
        settings=FAST,
    )
    async with running_scheduler(cfg) as scheduler:
        yield f"127.0.0.1:{scheduler.port}"


def limits(*, allow_loopback: bool) -> Limits:
    return Limits(
        rate=RateLimit(0.0, 1),
        fetch_max_bytes=MAX_FETCH,
        fetch_policy=AddressPolicy(allow_loopback=allow_loopback),
    )


@pytest.fixture
async def gw(start_gateway: StartGateway, scheduler_addr: str) -> AsyncIterator[Gw]:
    async with start_gateway(
        scheduler_addr=scheduler_addr, limits=limits(allow_loopback=True)
    ) as gw:
        yield gw


def submit(url: str, **kw: object) -> executions_pb2.CreateExecutionRequest:
    return executions_pb2.CreateExecutionRequest(
        workflow_json=WORKFLOW,
        inputs=[executions_pb2.InputFile(name="shapes.png", url=url)],
        **kw,  # type: ignore[arg-type]
    )


async def refusal(call: object) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    return [f"{v.field}: {v.description}" for v in field_violations(status)]


async def test_an_input_given_by_url_is_downloaded_and_stored(gw: Gw, files: Files) -> None:
    stub = executions_pb2_grpc.ExecutionServiceStub(gw.channel)
    made = await stub.CreateExecution(submit(f"{files.url}/hop.png"), metadata=gw.admin)
    assert list(made.input_names) == ["shapes.png"]
    assert made.state == executions_pb2.EXECUTION_STATE_QUEUED
    assert files.hits == {"hop.png": 1, "shapes.png": 1}


async def test_bad_urls_are_refused_per_input_and_nothing_is_created(gw: Gw, files: Files) -> None:
    stub = executions_pb2_grpc.ExecutionServiceStub(gw.channel)
    request = executions_pb2.CreateExecutionRequest(
        workflow_json=WORKFLOW,
        inputs=[
            executions_pb2.InputFile(name="shapes.png", url=f"{files.url}/missing.png"),
            executions_pb2.InputFile(name="b.png", url=f"{files.url}/big.png"),
            executions_pb2.InputFile(name="c.png", url="ftp://example.com/c.png"),
            executions_pb2.InputFile(name="d.png", url="http://user:pw@example.com/d.png"),
            executions_pb2.InputFile(name="e.png", url=f"{files.url}/chunked.png"),
        ],
    )
    problems = await refusal(stub.CreateExecution(request, metadata=gw.admin))
    assert problems[0].startswith("inputs[0].url: ") and "404" in problems[0]
    assert problems[1].startswith("inputs[1].url: ") and f"larger than {MAX_FETCH}" in problems[1]
    assert problems[2].startswith("inputs[2].url: ") and "http(s)" in problems[2]
    assert problems[3].startswith("inputs[3].url: ") and "credentials" in problems[3]
    assert problems[4].startswith("inputs[4].url: ") and "larger" in problems[4]
    listed = await stub.ListExecutions(executions_pb2.ListExecutionsRequest(), metadata=gw.admin)
    assert not listed.executions


async def test_private_addresses_are_refused_by_default(
    start_gateway: StartGateway, scheduler_addr: str, files: Files
) -> None:
    async with start_gateway(
        scheduler_addr=scheduler_addr, limits=limits(allow_loopback=False)
    ) as gw:
        stub = executions_pb2_grpc.ExecutionServiceStub(gw.channel)
        for url in (f"{files.url}/shapes.png", "http://169.254.169.254/latest/meta-data"):
            problems = await refusal(stub.CreateExecution(submit(url), metadata=gw.admin))
            assert "refused" in problems[0], problems
    assert files.hits == {}


async def test_a_retry_returns_the_first_execution_without_downloading_again(
    gw: Gw, files: Files
) -> None:
    stub = executions_pb2_grpc.ExecutionServiceStub(gw.channel)
    first = await stub.CreateExecution(
        submit(f"{files.url}/shapes.png", request_id="x-1"), metadata=gw.admin
    )
    again = await stub.CreateExecution(
        submit(f"{files.url}/shapes.png", request_id="x-1"), metadata=gw.admin
    )
    assert again.id == first.id
    assert files.hits == {"shapes.png": 1}
    problems = await refusal(
        stub.CreateExecution(
            submit(f"{files.url}/shapes.png", request_id="x-1", priority=5), metadata=gw.admin
        )
    )
    assert problems == ["request_id: already used with other parameters"]


async def test_idempotency_key_header_over_rest(gw: Gw) -> None:
    body = {
        "workflow": json.loads(WORKFLOW),
        "inputs": [{"name": "shapes.png", "content": "aGVsbG8="}],
        "labels": {"team": "a"},
    }
    headers = {"Authorization": gw.admin[0][1], "Idempotency-Key": "rest-x"}
    async with aiohttp.ClientSession(gw.rest_url, headers=headers) as http:
        async with http.post("/v1/executions", json=body) as response:
            assert response.status == 200, await response.text()
            first = await response.json()
        async with http.post("/v1/executions", json=body) as response:
            assert (await response.json())["id"] == first["id"]
        assert first["requestId"] == "rest-x"
        assert first["labels"] == {"team": "a"}
        body["labels"] = {"team": "b"}
        async with http.post("/v1/executions", json=body) as response:
            assert response.status == 400
