"""Object storage through the minio SDK, against MinIO or any S3 API.

The SDK is synchronous; calls that touch the network run in a worker thread. Presigning is
local arithmetic (the region is configured, so the SDK never asks the server for it), done by
:class:`Presigner` rather than the SDK: the scheduler signs dozens of URLs per attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from urllib.parse import quote, urlparse, urlsplit

from minio import Minio
from minio.commonconfig import ComposeSource
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


# The error codes of an object that does not exist (HEAD answers without a body).
MISSING_OBJECT = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})
_READ_CHUNK = 8 * 1024 * 1024

# A presigned URL lives at most this long (SigV4's limit), at least a second.
_MAX_EXPIRES_S = 7 * 24 * 3600


class Presigner:
    """SigV4 query-string presigning (UNSIGNED-PAYLOAD, only ``host`` signed), as the SDK
    does it but cheap enough for many URLs at once.

    The signing key depends only on the day, region and service: it is derived once a day,
    not for every URL, and one date stamp serves a whole batch. The object URL layout (path
    or virtual-host style, host and port) is taken once from the SDK itself, so the URLs are
    the SDK's own, byte for byte, for the same clock.
    """

    def __init__(
        self,
        client: Minio,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.clock = clock
        # Where objects live, from an URL the SDK builds for a placeholder key.
        sample = urlsplit(client.presigned_get_object(bucket, "k", expires=timedelta(seconds=1)))
        if not sample.path.endswith("/k"):
            raise ValueError(f"unexpected object URL layout {sample.path!r}")
        self._origin = f"{sample.scheme}://{sample.netloc}"
        self._host_header = f"host:{sample.netloc}"
        self._path_prefix = sample.path[:-1]
        self._day = ""
        self._key: hmac.HMAC | None = None

    def _signer(self, day: str) -> hmac.HMAC:
        """An HMAC keyed with the day's signing key, to be copied for each URL."""
        if day != self._day or self._key is None:
            key = ("AWS4" + self.secret_key).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._key = hmac.new(key, digestmod=hashlib.sha256)
            self._day = day
        return self._key

    def urls(
        self,
        method: str,
        keys: Sequence[str],
        ttl_s: float,
        *,
        query: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Presigned URLs for ``method`` on each key, valid ``ttl_s`` seconds from now;
        ``query`` adds parameters (``response-content-disposition``) to every URL."""
        expires = int(timedelta(seconds=ttl_s).total_seconds())
        if not 1 <= expires <= _MAX_EXPIRES_S:
            raise ValueError("presigned URLs expire between 1 second and 7 days")
        now = self.clock().astimezone(UTC)
        day = now.strftime("%Y%m%d")
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{day}/{self.region}/s3/aws4_request"
        signer = self._signer(day)
        extra = [
            f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted((query or {}).items())
        ]
        params = [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            f"X-Amz-Credential={quote(self.access_key + '/' + scope, safe='')}",
            f"X-Amz-Date={amz_date}",
            f"X-Amz-Expires={expires}",
            "X-Amz-SignedHeaders=host",
        ]
        url_query = "&".join(extra + params)
        canonical_query = "&".join(sorted(extra + params, key=lambda p: p.split("=")))
        head = f"{method}\n"
        tail = f"\n{canonical_query}\n{self._host_header}\n\nhost\nUNSIGNED-PAYLOAD"
        sign_head = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
        out = []
        for key in keys:
            path = self._path_prefix + quote(key)
            digest = hashlib.sha256(f"{head}{path}{tail}".encode()).hexdigest()
            mac = signer.copy()
            mac.update(f"{sign_head}{digest}".encode())
            out.append(f"{self._origin}{path}?{url_query}&X-Amz-Signature={mac.hexdigest()}")
        return out


@dataclass
class ObjectStore:
    """One bucket of an S3 API."""

    cfg: S3Config
    client: Minio

    @cached_property
    def presigner(self) -> Presigner:
        """Made on first use: it asks the SDK for one URL to learn the layout."""
        cfg = self.cfg
        return Presigner(self.client, cfg.bucket, cfg.access_key, cfg.secret_key, cfg.region)

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

    async def get(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        """The object's bytes; with ``length``, up to that many from ``offset``."""

        def run() -> bytes:
            response = self.client.get_object(self.bucket, key, offset=offset, length=length)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return await asyncio.to_thread(run)

    async def sha256(self, key: str) -> str:
        """The object's hex sha256, read through once as a stream (it may be gigabytes)."""

        def run() -> str:
            digest = hashlib.sha256()
            response = self.client.get_object(self.bucket, key)
            try:
                for chunk in response.stream(_READ_CHUNK):
                    digest.update(chunk)
            finally:
                response.close()
                response.release_conn()
            return digest.hexdigest()

        return await asyncio.to_thread(run)

    async def copy(self, source: str, target: str) -> bool:
        """A server-side copy (a multipart copy for sources over 5 GiB); False when the
        source does not exist."""

        def run() -> bool:
            try:
                self.client.compose_object(
                    self.bucket, target, [ComposeSource(self.bucket, source)]
                )
            except S3Error as err:
                if err.code in MISSING_OBJECT:
                    return False
                raise
            return True

        return await asyncio.to_thread(run)

    async def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""

        def run() -> int | None:
            try:
                return self.client.stat_object(self.bucket, key).size
            except S3Error as err:
                if err.code in MISSING_OBJECT:
                    return None
                raise

        return await asyncio.to_thread(run)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.remove_object, self.bucket, key)

    def presign_get(self, key: str, ttl_s: float, *, filename: str | None = None) -> str:
        query = None
        if filename:
            query = {"response-content-disposition": f'attachment; filename="{filename}"'}
        return self.presigner.urls("GET", [key], ttl_s, query=query)[0]

    def presign_put(self, key: str, ttl_s: float) -> str:
        return self.presigner.urls("PUT", [key], ttl_s)[0]

    def presign_gets(self, keys: Sequence[str], ttl_s: float) -> list[str]:
        """GET URLs for many keys at once, signed with one date and key."""
        return self.presigner.urls("GET", keys, ttl_s)

    def presign_puts(self, keys: Sequence[str], ttl_s: float) -> list[str]:
        """PUT URLs for many keys at once, signed with one date and key."""
        return self.presigner.urls("PUT", keys, ttl_s)


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
