"""``GET /ready``: whether the gateway can serve, checked on the dependencies themselves.

Ready means the gateway's database answers and each internal service (scheduler, models,
webhook) reports SERVING over ``grpc.health.v1``. Load balancers take a 503 replica out of
rotation; ``/health`` stays a liveness check that only says the process answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

Check = Callable[[], Awaitable[None]]


def database_check(pool: asyncpg.Pool) -> Check:
    async def check() -> None:
        await pool.fetchval("SELECT 1")

    return check


def grpc_health_check(channel: grpc.aio.Channel) -> Check:
    stub = health_pb2_grpc.HealthStub(channel)

    async def check() -> None:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            raise RuntimeError(f"reports {name}")

    return check


async def _outcome(check: Check, timeout_s: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except grpc.aio.AioRpcError as err:
        return f"{err.code().name}: {err.details()}"
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return "ok"


async def readiness(checks: Mapping[str, Check], timeout_s: float) -> dict[str, str]:
    """Every check's outcome, "ok" or why not, all run at once."""
    names = list(checks)
    outcomes = await asyncio.gather(*(_outcome(checks[n], timeout_s) for n in names))
    return dict(zip(names, outcomes, strict=True))


def ready_handler(
    checks: Mapping[str, Check], timeout_s: float
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def ready(_: web.Request) -> web.Response:
        results = await readiness(checks, timeout_s)
        ok = all(v == "ok" for v in results.values())
        body = {"status": "SERVING" if ok else "NOT_SERVING", "checks": results}
        return web.json_response(body, status=200 if ok else 503)

    return ready
