"""Object storage through the minio SDK, against MinIO or any S3 API.

The SDK is synchronous; calls that touch the network run in a worker thread. Presigning is
local arithmetic (the region is configured, so the SDK never asks the server for it).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from minio import Minio
from minio.error import S3Error

from comfyfleet.common.config import S3Config


def _client(endpoint: str, cfg: S3Config) -> Minio:
    url = urlparse(endpoint)
    if url.scheme not in {"http", "https"} or not url.netloc:
        raise ValueError(f"S3 endpoint {endpoint!r} must be an http(s) URL")
    return Minio(
        url.netloc,
        access_key=cfg.access_key,
        secret_key=cfg.secret_key,
        secure=url.scheme == "https",
        region=cfg.region,
    )


@dataclass
class ObjectStore:
    """One bucket of an S3 API."""

    cfg: S3Config
    client: Minio

    @classmethod
    def from_config(cls, cfg: S3Config) -> ObjectStore:
        return cls(cfg, _client(cfg.endpoint, cfg))

    @property
    def bucket(self) -> str:
        return self.cfg.bucket

    async def ensure_bucket(self) -> None:
        def run() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as err:
                    if err.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise

        await asyncio.to_thread(run)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(
            self.client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
        )

    async def put_file(
        self, key: str, path: Path, size: int, content_type: str, *, part_size: int = 0
    ) -> None:
        """Streams a local file up; files larger than ``part_size`` go as a multipart upload.

        ``part_size`` 0 lets the SDK choose; S3 wants at least 5 MiB per part.
        """

        def run() -> None:
            with path.open("rb") as stream:
                self.client.put_object(
                    self.bucket, key, stream, size, content_type=content_type, part_size=part_size
                )

        await asyncio.to_thread(run)

    async def get(self, key: str) -> bytes:
        def run() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await asyncio.to_thread(run)

    async def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""

        def run() -> int | None:
            try:
                return self.client.stat_object(self.bucket, key).size
            except S3Error as err:
                if err.code in {"NoSuchKey", "NoSuchObject", "NotFound"}:
                    return None
                raise

        return await asyncio.to_thread(run)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.remove_object, self.bucket, key)

    def presign_get(self, key: str, ttl_s: float, *, filename: str | None = None) -> str:
        headers: dict[str, str | list[str] | tuple[str]] | None = None
        if filename:
            headers = {"response-content-disposition": f'attachment; filename="{filename}"'}
        return self.client.presigned_get_object(
            self.bucket, key, expires=timedelta(seconds=ttl_s), response_headers=headers
        )

    def presign_put(self, key: str, ttl_s: float) -> str:
        return self.client.presigned_put_object(self.bucket, key, expires=timedelta(seconds=ttl_s))


def execution_prefix(tenant: str, execution_id: str) -> str:
    """Everything of an execution lives under its tenant's prefix."""
    return f"tenants/{tenant}/executions/{execution_id}"


def input_key(tenant: str, execution_id: str, name: str) -> str:
    return f"{execution_prefix(tenant, execution_id)}/inputs/{name}"


def model_key(tenant: str, sha256: str) -> str:
    """Model files are stored once per tenant and content, whatever their names."""
    return f"tenants/{tenant}/models/{sha256}"


def output_key(tenant: str, execution_id: str, attempt: int, slot: int) -> str:
    return f"{execution_prefix(tenant, execution_id)}/outputs/attempt-{attempt}/slot-{slot:03d}"
