"""Moving files through presigned URLs: inputs and models in, outputs out.

Every failure here is an infrastructure failure (an expired URL, a storage hiccup, a full
disk), so it surfaces as a retryable :class:`~comfyfleet.common.errors.Unavailable`: another
attempt gets fresh URLs and maybe another machine.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from comfyfleet.common.errors import Unavailable

CHUNK_BYTES = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Downloaded:
    """A file written to disk, with what it turned out to be."""

    path: Path
    size: int
    sha256: str


def _redact(url: str) -> str:
    """The URL without its query string: the signature must not reach logs or statuses."""
    return url.split("?", 1)[0]


async def _guard(what: str, url: str, reason: str, op: Callable[[], Awaitable[T]]) -> T:
    try:
        return await op()
    except aiohttp.ClientResponseError as err:
        raise Unavailable(
            f"{what} {_redact(url)} failed: HTTP {err.status} {err.message}",
            reason=reason,
            metadata={"http_status": str(err.status)},
        ) from err
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise Unavailable(
            f"{what} {_redact(url)} failed: {type(err).__name__}: {err}", reason=reason
        ) from err


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    reason: str = "INPUT_DOWNLOAD_FAILED",
) -> Downloaded:
    """Streams ``url`` into ``dest`` (via a temporary name, so a torn file never appears)."""

    async def run() -> Downloaded:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        digest = hashlib.sha256()
        size = 0
        async with session.get(url, raise_for_status=True) as response:
            with partial.open("wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(out.write, chunk)
        partial.replace(dest)
        return Downloaded(dest, size, digest.hexdigest())

    return await _guard("GET", url, reason, run)


async def upload(session: aiohttp.ClientSession, url: str, data: bytes, content_type: str) -> None:
    """PUTs ``data`` to a presigned URL with its media type."""

    async def run() -> None:
        headers = {"Content-Type": content_type}
        async with session.put(url, data=data, headers=headers, raise_for_status=True):
            pass

    await _guard("PUT", url, "OUTPUT_UPLOAD_FAILED", run)
