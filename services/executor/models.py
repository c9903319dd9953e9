"""The executor's model cache on disk: files by sha256, bounded in bytes, least recently used
first out.

A model is downloaded once however many requests name it at the same moment, verified
against its sha256 before it is kept, and never evicted while an attempt holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from comfyfleet.common.errors import Unavailable
from services.executor.transfer import download

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelSpec:
    """A model a workflow needs, as the scheduler resolved it."""

    name: str
    folder: str
    sha256: str
    size_bytes: int
    url: str

    @property
    def key(self) -> str:
        """How the engine looks the file up: "<folder>/<name>"."""
        return f"{self.folder}/{self.name}"


class ModelCache:
    """Model files under ``root``, named by their sha256."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._pins: Counter[str] = Counter()
        self._downloads: dict[str, asyncio.Task[Path]] = {}

    def load(self) -> None:
        """Adopts the files an earlier run of the executor left, oldest use first."""
        self.root.mkdir(parents=True, exist_ok=True)
        found = [p for p in self.root.iterdir() if p.is_file() and SHA256_RE.match(p.name)]
        for path in sorted(found, key=lambda p: p.stat().st_mtime):
            self._sizes[path.name] = path.stat().st_size
        for pattern in ("*.partial", "*.download"):
            for stale in self.root.glob(pattern):
                stale.unlink(missing_ok=True)
        # The bound may have shrunk since the files were written.
        self._evict()

    def cached(self) -> list[str]:
        return list(self._sizes)

    @property
    def used_bytes(self) -> int:
        return sum(self._sizes.values())

    @contextlib.asynccontextmanager
    async def holding(
        self, session: aiohttp.ClientSession, specs: Iterable[ModelSpec]
    ) -> AsyncIterator[Mapping[str, Path]]:
        """Fetches every model and keeps them from eviction until the block ends."""
        wanted = list(specs)
        shas = [s.sha256 for s in wanted]
        self._pins.update(shas)
        try:
            paths = await asyncio.gather(*(self.fetch(session, s) for s in wanted))
            yield {spec.key: path for spec, path in zip(wanted, paths, strict=True)}
        finally:
            self._pins.subtract(shas)
            self._pins += Counter()  # drops the zero counts
            self._evict()

    async def fetch(self, session: aiohttp.ClientSession, spec: ModelSpec) -> Path:
        """The model's path, downloading it on a miss; concurrent misses share one download."""
        path = self.root / spec.sha256
        if spec.sha256 in self._sizes:
            self.hits += 1
            self._sizes.move_to_end(spec.sha256)
            # The file's mtime carries the LRU order across restarts.
            with contextlib.suppress(OSError):
                os.utime(path)
            return path
        self.misses += 1
        task = self._downloads.get(spec.sha256)
        if task is None:
            task = asyncio.create_task(self._download(session, spec, path))
            self._downloads[spec.sha256] = task
            task.add_done_callback(lambda _: self._downloads.pop(spec.sha256, None))
        return await asyncio.shield(task)

    async def _download(self, session: aiohttp.ClientSession, spec: ModelSpec, path: Path) -> Path:
        staged = path.with_name(path.name + ".download")
        got = await download(session, spec.url, staged, reason="MODEL_DOWNLOAD_FAILED")
        if got.sha256 != spec.sha256 or (spec.size_bytes and got.size != spec.size_bytes):
            staged.unlink(missing_ok=True)
            raise Unavailable(
                f"model {spec.key} arrived with sha256 {got.sha256} and {got.size} bytes, "
                f"expected {spec.sha256} and {spec.size_bytes}",
                reason="MODEL_CHECKSUM_MISMATCH",
                metadata={"model": spec.key, "sha256": spec.sha256},
            )
        staged.replace(path)
        self._sizes[spec.sha256] = got.size
        self._evict()
        return path

    def _evict(self) -> None:
        """Drops least recently used models that no attempt holds until the cache fits."""
        for sha in list(self._sizes):
            if self.used_bytes <= self.max_bytes:
                return
            if self._pins[sha] > 0:
                continue
            size = self._sizes.pop(sha)
            (self.root / sha).unlink(missing_ok=True)
            log.info("evicted model %s (%d bytes) from the cache", sha, size)
