"""`python -m services.models` as an operator runs it: serves, then stops gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from comfyfleet.common.grpcserver import channel
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.devstack.process import free_port
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from tests.integration.models.conftest import model_file
from tests.support.eventually import eventually

REPO = Path(__file__).resolve().parents[3]


async def _health(chan: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(chan)
    response = await stub.Check(
        health_pb2.HealthCheckRequest(service="comfyfleet.models.v1.ModelService")
    )
    return int(response.status)


async def test_sigterm_lets_an_upload_in_flight_finish(
    infra_env: dict[str, str], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        **infra_env,
        "COMFYFLEET_GRPC_ADDR": address,
        "COMFYFLEET_SHUTDOWN_GRACE_S": "20",
        # The upload's temp file appearing there shows the server is inside the call.
        "COMFYFLEET_MODELS_SPOOL_DIR": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.models", cwd=REPO, env=env
    )
    try:
        async with channel(address) as chan:
            await eventually(lambda: _expect_serving(chan), timeout=60)
            blob = model_file(1)
            release = asyncio.Event()

            async def requests() -> AsyncIterator[models_pb2.UploadModelRequest]:
                yield models_pb2.UploadModelRequest(
                    model=models_pb2.Model(name="a.safetensors", type=models_pb2.MODEL_TYPE_VAE)
                )
                yield models_pb2.UploadModelRequest(chunk=blob[:100])
                await release.wait()
                yield models_pb2.UploadModelRequest(chunk=blob[100:])

            stub = models_pb2_grpc.ModelServiceStub(chan)
            upload = asyncio.ensure_future(
                stub.UploadModel(requests(), metadata=tenant_metadata("acme"))
            )
            await eventually(lambda: _expect_spooling(upload, tmp_path))
            proc.send_signal(signal.SIGTERM)
            await eventually(lambda: _expect_not_serving(chan))
            release.set()
            model = await upload
            assert model.size_bytes == len(blob)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _expect_serving(chan: grpc.aio.Channel) -> None:
    try:
        status = await _health(chan)
    except grpc.aio.AioRpcError as err:
        raise AssertionError(f"not up yet: {err.code()}") from None
    assert status == health_pb2.HealthCheckResponse.SERVING


async def _expect_spooling(upload: asyncio.Future[models_pb2.Model], spool_dir: Path) -> None:
    assert not upload.done()
    files = await asyncio.to_thread(os.listdir, spool_dir)
    assert files, "the server has not started receiving the upload"


async def _expect_not_serving(chan: grpc.aio.Channel) -> None:
    """Shutting down: health says NOT_SERVING, or the server already refuses new calls."""
    try:
        status = await _health(chan)
    except grpc.aio.AioRpcError:
        return
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
