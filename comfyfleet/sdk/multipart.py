"""Large model files go up in parts: plain HTTP PUTs of file ranges to presigned URLs.

The platform hands out one presigned URL per part (StartModelUpload); each part is read from
disk as it is sent, a few at a time, and the ETags object storage answers with complete the
upload (CompleteModelUpload), which checks and registers the file as a streamed upload.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from comfyfleet.models.v1 import models_pb2
from comfyfleet.sdk import presigned
from comfyfleet.sdk.requests import Progress, model_type

MIB = 1024 * 1024
# Files above this size go up in parts; below it one gRPC stream is simpler and as fast.
MULTIPART_THRESHOLD = 64 * MIB
PARALLEL_PARTS = 4
PART_TIMEOUT_S = 600.0
_READ_BYTES = 1 * MIB


def start_request(
    path: Path, kind: str | int, *, name: str = "", part_size: int = 0
) -> models_pb2.StartModelUploadRequest:
    head = models_pb2.Model(name=name or path.name, type=model_type(kind))  # type: ignore[arg-type]
    return models_pb2.StartModelUploadRequest(
        model=head, size_bytes=path.stat().st_size, part_size=part_size
    )


def complete_request(
    started: models_pb2.StartModelUploadResponse, parts: list[models_pb2.CompletedPart]
) -> models_pb2.CompleteModelUploadRequest:
    return models_pb2.CompleteModelUploadRequest(upload_id=started.upload_id, parts=parts)


class _Counter:
    """Bytes sent over all parts, reported as they go; parts run in several threads."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.progress = progress
        self.sent = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.sent += n
            self.progress(self.sent, self.total)


class _PartReader:
    """One byte range of the file as a request body, read in 1 MiB pieces as it is sent."""

    def __init__(self, file: BinaryIO, length: int, on_read: Callable[[int], None]) -> None:
        self.file = file
        self.left = length
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        want = self.left if size is None or size < 0 else min(size, self.left)
        data = self.file.read(min(want, _READ_BYTES)) if want else b""
        self.left -= len(data)
        self.on_read(len(data))
        return data


def put_parts(
    started: models_pb2.StartModelUploadResponse,
    path: Path,
    *,
    progress: Progress | None = None,
    parallel: int = PARALLEL_PARTS,
) -> list[models_pb2.CompletedPart]:
    """PUTs every part, `parallel` at a time; the parts with their ETags, in order."""
    size = path.stat().st_size
    counter = _Counter(size, progress)

    def one(target: models_pb2.UploadPartTarget) -> models_pb2.CompletedPart:
        offset = (target.part_number - 1) * started.part_size
        length = max(0, min(started.part_size, size - offset))
        etag = _put_part(target.url, path, offset, length, counter)
        return models_pb2.CompletedPart(part_number=target.part_number, etag=etag)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, started.parts))


def _put_part(url: str, path: Path, offset: int, length: int, counter: _Counter) -> str:
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
    with path.open("rb") as file:
        file.seek(offset, os.SEEK_SET)
        body = _PartReader(file, length, counter.add)
        return presigned.put(
            url, body, headers, timeout_s=PART_TIMEOUT_S, what="a part of the model"
        )
