"""``python -m services.scheduler`` as an operator runs it: env config, health, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from comfyfleet.common.grpcserver import channel
from comfyfleet.devstack.process import free_port
from comfyfleet.environments.v1 import environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2_grpc
from services.scheduler.config import Config
from tests.integration.scheduler.conftest import Clients
from tests.integration.scheduler.helpers import STATE, create, wait_for_state
from tests.integration.scheduler.scripted_executor import scripted_executor, succeed
from tests.support.eventually import eventually
from tests.support.paths import REPO_ROOT

TENANT = "acme"


def environment(cfg: Config, address: str) -> dict[str, str]:
    return {
        **os.environ,
        "COMFYFLEET_GRPC_ADDR": address,
        "COMFYFLEET_DATABASE_URL": cfg.database.url,
        "COMFYFLEET_NATS_URL": cfg.nats.url,
        "COMFYFLEET_NATS_STREAM": cfg.nats.stream,
        "COMFYFLEET_NATS_SUBJECT_PREFIX": cfg.nats.subject_prefix,
        "COMFYFLEET_S3_ENDPOINT": cfg.s3.endpoint,
        "COMFYFLEET_S3_ACCESS_KEY": cfg.s3.access_key,
        "COMFYFLEET_S3_SECRET_KEY": cfg.s3.secret_key,
        "COMFYFLEET_S3_REGION": cfg.s3.region,
        "COMFYFLEET_S3_BUCKET": cfg.s3.bucket,
        "COMFYFLEET_SCHEDULER_POLL_INTERVAL_S": "0.1",
        "COMFYFLEET_SCHEDULER_HEARTBEAT_INTERVAL_S": "0.3",
        "COMFYFLEET_SCHEDULER_SHUTDOWN_GRACE_S": "20",
    }


async def serving(address: str) -> None:
    async with channel(address) as ch:
        try:
            response = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="comfyfleet.scheduler.v1.SchedulerService"),
                timeout=1,
            )
        except grpc.aio.AioRpcError as err:
            raise AssertionError(f"not serving: {err.code()}") from err
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def state_in_db(cfg: Config, execution_id: str) -> str:
    conn = await asyncpg.connect(cfg.database.url)
    try:
        return str(
            await conn.fetchval(
                "SELECT state FROM scheduler.executions WHERE id = $1", execution_id
            )
        )
    finally:
        await conn.close()


async def test_sigterm_stops_claiming_and_lets_the_running_attempt_finish(
    scheduler_config: Config, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "scheduler.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.scheduler",
        cwd=REPO_ROOT,
        env=environment(scheduler_config, address),
        stdout=log,
        stderr=log,
    )
    try:
        await eventually(lambda: _alive_and(process, serving(address)), timeout=30)
        async with channel(address) as ch:
            clients = Clients(
                address,
                executions_pb2_grpc.ExecutionServiceStub(ch),
                scheduler_pb2_grpc.SchedulerServiceStub(ch),
                environments_pb2_grpc.EnvironmentServiceStub(ch),
            )
            async with scripted_executor(
                address, "ex-1", succeed(("2", "a.png", b"png"), gated=True)
            ) as ex:
                running = await create(clients, TENANT)
                waiting = await create(clients, TENANT)
                await wait_for_state(clients, TENANT, running.id, STATE.EXECUTION_STATE_RUNNING)
                process.send_signal(signal.SIGTERM)
                await eventually(lambda: _not_serving(address))
                ex.servicer.gate.set()  # the attempt finishes within the grace period
                assert await asyncio.wait_for(process.wait(), 30) == 0
        assert await state_in_db(scheduler_config, running.id) == "SUCCEEDED"
        assert await state_in_db(scheduler_config, waiting.id) == "QUEUED"
        assert ex.servicer.attempts() == [(running.id, 1)]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    output = (tmp_path / "scheduler.log").read_text()
    assert "scheduler stopping: 1 attempts in flight" in output


async def _alive_and(process: asyncio.subprocess.Process, check: object) -> None:
    assert process.returncode is None, "the scheduler exited"
    await check  # type: ignore[misc]


async def _not_serving(address: str) -> None:
    try:
        await serving(address)
    except AssertionError:
        return
    raise AssertionError("still serving")
