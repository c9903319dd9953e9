"""Nothing is lost: the service killed (-9) or stopped mid-delivery, then restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from comfyfleet.common.events import EventBus
from comfyfleet.common.grpcserver import channel
from comfyfleet.devstack.process import free_port
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from services.webhook.config import Config
from tests.integration.webhook.support import Client, Received, Receiver, execution_event
from tests.support.eventually import eventually

pb = webhooks_pb2
REPO = Path(__file__).resolve().parents[3]


def service_env(cfg: Config, port: int, schedule: str) -> dict[str, str]:
    return {
        **os.environ,
        "COMFYFLEET_GRPC_ADDR": f"127.0.0.1:{port}",
        "COMFYFLEET_DATABASE_URL": cfg.database.url,
        "COMFYFLEET_NATS_URL": cfg.nats.url,
        "COMFYFLEET_NATS_STREAM": cfg.nats.stream,
        "COMFYFLEET_NATS_SUBJECT_PREFIX": cfg.nats.subject_prefix,
        "COMFYFLEET_WEBHOOK_ALLOW_LOOPBACK": "1",
        "COMFYFLEET_WEBHOOK_RETRY_SCHEDULE": schedule,
        "COMFYFLEET_WEBHOOK_RETRY_JITTER": "0.1",
        "COMFYFLEET_WEBHOOK_REQUEST_TIMEOUT": "1s",
        "COMFYFLEET_WEBHOOK_CLAIM_LEASE": "2s",
        "COMFYFLEET_WEBHOOK_POLL_INTERVAL": "200ms",
        "COMFYFLEET_WEBHOOK_ACK_WAIT": "2s",
        "COMFYFLEET_WEBHOOK_PULL_EXPIRES": "1s",
        "COMFYFLEET_SHUTDOWN_GRACE": "5s",
    }


@asynccontextmanager
async def service_process(
    env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m services.webhook``; killed on exit if still running."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.webhook", cwd=REPO, env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def ready_client(port: int, tenant: str) -> tuple[grpc.aio.Channel, Client]:
    ch = channel(f"127.0.0.1:{port}")
    client = Client(webhooks_pb2_grpc.WebhookServiceStub(ch), tenant)

    async def answers() -> None:
        try:
            await client.ListSubscriptions(pb.ListSubscriptionsRequest())
        except grpc.aio.AioRpcError as err:
            raise AssertionError(err.code()) from err

    await eventually(answers, timeout=30.0)
    return ch, client


def stopped_serving(port: int) -> Callable[[], Awaitable[None]]:
    """A check that passes once the service no longer takes calls."""

    async def check() -> None:
        async with channel(f"127.0.0.1:{port}") as ch:
            try:
                reply = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return
        assert reply.status != health_pb2.HealthCheckResponse.SERVING

    return check


def event_id_of(got: Received) -> str:
    data = json.loads(got.body)["data"]
    return str(data["eventId"])


async def test_killed_mid_delivery_and_restarted_every_event_arrives(
    webhook_config: Config, receiver: Receiver, bus: EventBus, tmp_path: Path
) -> None:
    async def flaky(got: Received, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n % 3 == 0 else 200)

    hanging = 0

    async def slow(got: Received, n: int) -> web.StreamResponse:
        nonlocal hanging
        if n % 4 == 0:
            hanging += 1
            try:
                await asyncio.sleep(2)  # past the 1 s timeout
            finally:
                hanging -= 1
        return web.Response(status=200)

    receiver.handlers.update(flaky=flaky, slow=slow)
    # A port where nothing listens until after the restart: connections are refused.
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    refusing_port = refusing.getsockname()[1]
    late = Receiver()
    port = free_port()
    env = service_env(webhook_config, port, "100ms,200ms,500ms" + ",1s" * 12)
    log = tmp_path / "webhook.log"
    first_batch = [execution_event("tenant-a") for _ in range(30)]
    second_batch = [execution_event("tenant-a") for _ in range(30)]
    try:
        async with service_process(env, log) as proc:
            ch, client = await ready_client(port, "tenant-a")
            subs = {
                "healthy": await client.subscribe(receiver.url("healthy")),
                "flaky": await client.subscribe(receiver.url("flaky")),
                "slow": await client.subscribe(receiver.url("slow")),
                "refusing": await client.subscribe(f"http://127.0.0.1:{refusing_port}/refusing"),
            }
            await ch.close()
            for event in first_batch:
                await bus.publish(event)

            async def under_way() -> None:
                assert len(receiver.at("healthy")) >= 5
                assert hanging > 0  # an attempt is in flight right now

            await eventually(under_way)
            proc.kill()  # SIGKILL: no cleanup, claims and unacked events left behind
            await proc.wait()
        for event in second_batch:
            await bus.publish(event)
        refusing.close()
        async with service_process(env, log):
            await late.start(refusing_port)
            expected = {e.event_id for e in first_batch + second_batch}

            async def everything_arrived() -> None:
                for name in ("healthy", "flaky", "slow"):
                    ok = {event_id_of(r) for r in receiver.at(name)}
                    assert ok >= expected, f"{name} misses {len(expected - ok)}"
                assert {event_id_of(r) for r in late.at("refusing")} >= expected

            await eventually(everything_arrived, timeout=60.0)
    finally:
        refusing.close()
        await late.stop()

    # Duplicates are allowed, but each carries its delivery's one webhook-id.
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for got in [*receiver.received, *late.received]:
        ids[(got.path, event_id_of(got))].add(got.webhook_id)
    assert all(len(v) == 1 for v in ids.values())
    assert len(ids) == 4 * len(expected)
    for got in receiver.at("healthy")[:3]:
        got.verify(subs["healthy"].secret)


async def test_sigterm_finishes_attempts_in_flight(
    webhook_config: Config, receiver: Receiver, bus: EventBus, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def held(got: Received, n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    receiver.handlers["held"] = held
    port = free_port()
    env = service_env(webhook_config, port, "100ms")
    env["COMFYFLEET_WEBHOOK_REQUEST_TIMEOUT"] = "10s"
    env["COMFYFLEET_WEBHOOK_CLAIM_LEASE"] = "20s"
    async with service_process(env, tmp_path / "webhook.log") as proc:
        ch, client = await ready_client(port, "tenant-a")
        sub = await client.subscribe(receiver.url("held"))
        await ch.close()
        await bus.publish(execution_event("tenant-a"))

        async def in_flight() -> None:
            assert len(receiver.at("held")) == 1

        await eventually(in_flight)
        proc.send_signal(signal.SIGTERM)
        await eventually(stopped_serving(port))
        release.set()  # the answer comes only once the stop is under way
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0

    conn = await asyncpg.connect(webhook_config.database.url)
    try:
        row = await conn.fetchrow(
            "SELECT state, attempts FROM webhook.deliveries WHERE subscription_id = $1", sub.id
        )
    finally:
        await conn.close()
    assert row is not None and (row["state"], row["attempts"]) == ("succeeded", 1)
    assert len(receiver.at("held")) == 1
