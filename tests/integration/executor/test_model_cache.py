"""The disk model cache against a real HTTP server: one download shared by concurrent needs,
a failed download shared too and retried later, held models kept, files adopted on restart."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from comfyfleet.common.errors import Unavailable
from services.executor.models import ModelCache, ModelSpec
from tests.support.eventually import eventually


@dataclass
class ModelServer:
    """Serves model files by name, counting requests; ``gate`` holds every answer until set."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    failing: set[str] = field(default_factory=set)
    base_url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(name)
        await self.gate.wait()
        if name in self.failing or name not in self.files:
            return web.Response(status=503)
        return web.Response(body=self.files[name])

    def spec(self, name: str, data: bytes) -> ModelSpec:
        self.files[name] = data
        sha256 = hashlib.sha256(data).hexdigest()
        return ModelSpec(name, "checkpoints", sha256, len(data), f"{self.base_url}/{name}")


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    state = ModelServer()
    app = web.Application()
    app.router.add_get("/{name}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def new_cache(root: Path, max_bytes: int = 1 << 20) -> ModelCache:
    cache = ModelCache(root, max_bytes)
    cache.load()
    return cache


async def test_concurrent_needs_of_one_model_share_one_download(
    tmp_path: Path, server: ModelServer, http: aiohttp.ClientSession
) -> None:
    cache = new_cache(tmp_path / "models")
    spec = server.spec("big.safetensors", os.urandom(3000))
    fetching = asyncio.gather(*(cache.fetch(http, spec) for _ in range(3)))

    async def all_missed() -> None:
        assert cache.misses == 3 and server.requests == ["big.safetensors"]

    await eventually(all_missed)
    server.gate.set()
    paths = await fetching

    assert server.requests == ["big.safetensors"]
    assert len(set(paths)) == 1 and paths[0].read_bytes() == server.files["big.safetensors"]
    assert cache.cached() == [spec.sha256]
    await cache.fetch(http, spec)
    assert (cache.hits, len(server.requests)) == (1, 1)


async def test_a_failed_download_fails_every_waiter_and_the_next_need_tries_again(
    tmp_path: Path, server: ModelServer, http: aiohttp.ClientSession
) -> None:
    cache = new_cache(tmp_path / "models")
    spec = server.spec("flaky.safetensors", b"weights")
    server.failing.add(spec.name)
    server.gate.set()

    results = await asyncio.gather(
        *(cache.fetch(http, spec) for _ in range(2)), return_exceptions=True
    )

    assert all(isinstance(r, Unavailable) and r.retryable for r in results)
    assert len(server.requests) == 1 and cache.cached() == []
    assert [p.name for p in (tmp_path / "models").iterdir()] == []
    server.failing.clear()
    path = await cache.fetch(http, spec)
    assert path.read_bytes() == b"weights" and len(server.requests) == 2


async def test_a_held_model_is_not_evicted_until_its_run_lets_go(
    tmp_path: Path, server: ModelServer, http: aiohttp.ClientSession
) -> None:
    cache = new_cache(tmp_path / "models", max_bytes=1000)
    server.gate.set()
    first = server.spec("first.safetensors", os.urandom(800))
    second = server.spec("second.safetensors", os.urandom(800))

    async with cache.holding(http, [first]) as held:
        async with cache.holding(http, [second]):
            # Both held: over the bound, yet neither may go.
            assert sorted(cache.cached()) == sorted([first.sha256, second.sha256])
        assert held[first.key].exists()
        assert cache.cached() == [first.sha256]

    assert cache.used_bytes == 800


async def test_a_restarted_executor_adopts_its_files_least_recently_used_first(
    tmp_path: Path, server: ModelServer, http: aiohttp.ClientSession
) -> None:
    root = tmp_path / "models"
    cache = new_cache(root)
    server.gate.set()
    older = server.spec("older.safetensors", os.urandom(100))
    newer = server.spec("newer.safetensors", os.urandom(100))
    await cache.fetch(http, older)
    await cache.fetch(http, newer)
    os.utime(root / older.sha256, (1_000_000, 1_000_000))  # used long ago
    (root / "torn.download").write_bytes(b"half a file")

    restarted = new_cache(root)
    assert restarted.cached() == [older.sha256, newer.sha256]
    assert not (root / "torn.download").exists()
    await restarted.fetch(http, newer)  # a hit: nothing downloaded
    assert (restarted.hits, len(server.requests)) == (1, 2)

    # Restarted with a smaller bound, the least recently used file goes at once.
    smaller = new_cache(root, max_bytes=150)
    assert smaller.cached() == [newer.sha256]
    assert sorted(p.name for p in root.iterdir()) == [newer.sha256]
