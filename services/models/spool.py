"""Receiving an upload: bytes go to a temp file, hashed on the way, within a size limit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from comfyfleet.common.errors import FieldViolation, InvalidArgument

REASON_TOO_LARGE = "MODEL_TOO_LARGE"


@dataclass(frozen=True)
class SpooledFile:
    path: Path
    size: int
    sha256: str


@asynccontextmanager
async def spool(
    chunks: AsyncIterable[bytes], *, max_bytes: int, directory: Path | None = None
) -> AsyncIterator[SpooledFile]:
    """Writes the chunks to a temp file that lives as long as the context."""
    fd, name = tempfile.mkstemp(prefix="comfyfleet-upload-", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, sha256 = await _copy(chunks, out, max_bytes)
        yield SpooledFile(path, size, sha256)
    finally:
        # Synchronous on purpose: an await here could be cancelled and leak the file.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _copy(chunks: AsyncIterable[bytes], out: BinaryIO, max_bytes: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        # Stop reading at once: a client must not make us write past the limit.
        if size > max_bytes:
            raise too_large(max_bytes)
        # Disk writes and hashing of multi-megabyte chunks would stall the event loop.
        await asyncio.to_thread(_write, out, digest, chunk)
    return size, digest.hexdigest()


def _write(out: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    digest.update(chunk)
    out.write(chunk)


def too_large(max_bytes: int) -> InvalidArgument:
    description = f"the file is larger than the limit of {max_bytes} bytes"
    return InvalidArgument(
        description,
        [FieldViolation("chunk", description, REASON_TOO_LARGE)],
        reason=REASON_TOO_LARGE,
    )
