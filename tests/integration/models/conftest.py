"""A real models service on a fresh database and bucket, and helpers to call it."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

import aiohttp
import asyncpg
import grpc
import pytest
import torch
from safetensors.torch import save

from comfyfleet.common.config import DatabaseConfig, S3Config
from comfyfleet.common.errors import FieldViolation, field_violations, from_rpc_error
from comfyfleet.common.grpcserver import channel
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from services.models.config import MIB, Config
from services.models.server import run_server
from tests.support.infra import S3Info

CHUNK = 64 * 1024


@dataclass
class ModelsService:
    stub: models_pb2_grpc.ModelServiceStub
    port: int
    database_url: str
    s3: S3Info
    bucket: str

    async def upload(
        self,
        tenant: str,
        blob: bytes,
        name: str = "model.safetensors",
        model_type: models_pb2.ModelType = models_pb2.MODEL_TYPE_CHECKPOINT,
        chunk: int = CHUNK,
    ) -> models_pb2.Model:
        first = models_pb2.UploadModelRequest(model=models_pb2.Model(name=name, type=model_type))
        chunks = [blob[i : i + chunk] for i in range(0, len(blob), chunk)]
        requests = [first, *(models_pb2.UploadModelRequest(chunk=c) for c in chunks)]
        return await self.upload_raw(tenant, requests)

    async def upload_raw(
        self, tenant: str, requests: Iterable[models_pb2.UploadModelRequest]
    ) -> models_pb2.Model:
        return await self.stub.UploadModel(iter(list(requests)), metadata=tenant_metadata(tenant))

    async def start_upload(
        self,
        tenant: str,
        size: int,
        name: str = "model.safetensors",
        model_type: models_pb2.ModelType = models_pb2.MODEL_TYPE_CHECKPOINT,
        *,
        part_size: int = 5 * MIB,
        sha256: str = "",
        request_id: str = "",
    ) -> models_pb2.StartModelUploadResponse:
        request = models_pb2.StartModelUploadRequest(
            model=models_pb2.Model(name=name, type=model_type),
            size_bytes=size,
            part_size=part_size,
            sha256=sha256,
            request_id=request_id,
        )
        return await self.stub.StartModelUpload(request, metadata=tenant_metadata(tenant))

    async def complete_upload(
        self, tenant: str, upload_id: str, parts: list[models_pb2.CompletedPart]
    ) -> models_pb2.Model:
        request = models_pb2.CompleteModelUploadRequest(upload_id=upload_id, parts=parts)
        return await self.stub.CompleteModelUpload(request, metadata=tenant_metadata(tenant))

    async def multipart_upload(
        self,
        tenant: str,
        blob: bytes,
        name: str = "model.safetensors",
        model_type: models_pb2.ModelType = models_pb2.MODEL_TYPE_CHECKPOINT,
    ) -> models_pb2.Model:
        started = await self.start_upload(tenant, len(blob), name, model_type)
        parts = await put_parts(started, blob)
        return await self.complete_upload(tenant, started.upload_id, parts)

    async def row_count(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM models.models"))
        finally:
            await conn.close()

    async def object_keys(self, prefix: str = "tenants/") -> list[str]:
        def run() -> list[str]:
            objects = self.s3.client().list_objects(self.bucket, prefix=prefix, recursive=True)
            return sorted(o.object_name for o in objects if o.object_name)

        return await asyncio.to_thread(run)


@pytest.fixture
def start_models(
    fresh_database: str, s3_server: S3Info, s3_bucket: str
) -> Callable[..., AsyncIterator[ModelsService]]:
    """Starts the service; keyword arguments override the test configuration."""
    base = Config(
        grpc_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        s3=S3Config(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            region=s3_server.region,
            bucket=s3_bucket,
        ),
        max_model_bytes=32 * MIB,
        presign_ttl_s=60.0,
        part_size=5 * MIB,
        shutdown_grace_s=1.0,
    )

    async def start(**overrides: object) -> AsyncIterator[ModelsService]:
        cfg = replace(base, **overrides)  # type: ignore[arg-type]
        async with run_server(cfg) as server, channel(f"127.0.0.1:{server.port}") as chan:
            yield ModelsService(
                models_pb2_grpc.ModelServiceStub(chan),
                server.port,
                fresh_database,
                s3_server,
                s3_bucket,
            )

    return start


@pytest.fixture
async def models(
    start_models: Callable[..., AsyncIterator[ModelsService]],
) -> AsyncIterator[ModelsService]:
    async for service in start_models():
        yield service


def model_file(seed: int = 0, *, elements: int = 1000) -> bytes:
    """A small valid safetensors file; different seeds give different bytes."""
    generator = torch.Generator().manual_seed(seed)
    return save(
        {
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (
                torch.randn(4, 768, generator=generator, dtype=torch.float16)
            ),
            "extra.weight": torch.randn(elements, generator=generator),
        },
        metadata={"seed": str(seed)},
    )


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


async def download(url: str) -> bytes:
    def run() -> bytes:
        with urllib.request.urlopen(url, timeout=30) as response:
            return bytes(response.read())

    return await asyncio.to_thread(run)


async def put_part(url: str, data: bytes) -> tuple[int, str]:
    """One part by a plain HTTP PUT: the status and the ETag."""
    headers = {"Content-Type": "application/octet-stream"}
    async with (
        aiohttp.ClientSession() as session,
        session.put(url, data=data, headers=headers) as r,
    ):
        await r.read()
        return r.status, r.headers.get("ETag", "")


async def put_parts(
    started: models_pb2.StartModelUploadResponse, blob: bytes
) -> list[models_pb2.CompletedPart]:
    """PUTs the blob's parts in parallel; the list CompleteModelUpload takes."""
    size = started.part_size

    async def one(target: models_pb2.UploadPartTarget) -> models_pb2.CompletedPart:
        start = (target.part_number - 1) * size
        status, etag = await put_part(target.url, blob[start : start + size])
        assert status == 200, status
        return models_pb2.CompletedPart(part_number=target.part_number, etag=etag)

    return list(await asyncio.gather(*(one(t) for t in started.parts)))


async def rpc_error(call: Awaitable[object]) -> tuple[grpc.StatusCode, list[FieldViolation]]:
    """The code and field violations of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = from_rpc_error(caught.value).status
    return caught.value.code(), field_violations(status)
