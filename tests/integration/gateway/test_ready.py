"""GET /ready reflects the database and the internal services; /health only the process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest

from comfyfleet.common.grpcserver import serve
from tests.integration.gateway.conftest import StartGateway


async def get(url: str, path: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession(url) as http, http.get(path) as response:
        return response.status, await response.json()


@pytest.fixture
async def peers() -> AsyncIterator[dict[str, str]]:
    """Three servers that answer grpc.health.v1 with SERVING, as the real services do."""
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(serve("127.0.0.1:0", [])) for _ in range(3)]
        yield {
            name: f"127.0.0.1:{s.port}"
            for name, s in zip(("scheduler", "models", "webhook"), servers, strict=True)
        }


async def test_ready_when_every_dependency_answers(
    start_gateway: StartGateway, peers: dict[str, str]
) -> None:
    async with start_gateway(
        scheduler_addr=peers["scheduler"],
        models_addr=peers["models"],
        webhook_addr=peers["webhook"],
    ) as gw:
        status, body = await get(gw.rest_url, "/ready")
    assert status == 200
    assert body == {
        "status": "SERVING",
        "checks": {"database": "ok", "scheduler": "ok", "models": "ok", "webhook": "ok"},
    }


async def test_not_ready_names_the_unreachable_services(
    start_gateway: StartGateway, peers: dict[str, str]
) -> None:
    async with start_gateway(
        scheduler_addr=peers["scheduler"], ready_timeout_s=1.0
    ) as gw:  # models and webhook unreachable
        status, body = await get(gw.rest_url, "/ready")
        alive, _ = await get(gw.rest_url, "/health")
    assert status == 503
    assert body["status"] == "NOT_SERVING"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["database"] == "ok" and checks["scheduler"] == "ok"
    assert checks["models"] != "ok" and checks["webhook"] != "ok"
    assert alive == 200
