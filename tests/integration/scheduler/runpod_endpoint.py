"""A RunPod endpoint for the scheduler's tests: the real RunPod worker
(``python -m services.executor.runpod_worker``) under the ``runpod`` SDK's local API server,
behind a small HTTP proxy that can make the endpoint answer 5xx or stop answering."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from comfyfleet.devstack import free_port
from tests.integration.executor.runpod.conftest import START_TIMEOUT_S, worker_env, worker_process
from tests.support.eventually import eventually

PASS, ERROR, HANG = "pass", "error", "hang"
FORWARDED = frozenset({"content-type", "authorization", "accept"})


@contextlib.asynccontextmanager
async def sdk_endpoint(
    work: Path, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """The worker under ``--rp_serve_api`` on a free port, with ``extra_env`` added to its
    environment; its base URL."""
    port = free_port()
    args = ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)]
    log_file = work / "worker.log"
    env = {**worker_env(work / "work"), **(extra_env or {})}
    async with (
        worker_process(env, args, log_file) as process,
        aiohttp.ClientSession() as http,
    ):
        base = f"http://127.0.0.1:{port}"

        async def serving() -> None:
            assert process.returncode is None, log_file.read_text()
            try:
                async with http.get(base + "/docs") as response:
                    assert response.status == 200
            except aiohttp.ClientConnectionError as err:
                raise AssertionError(f"not serving yet: {err}") from None

        await eventually(serving, timeout=START_TIMEOUT_S, interval=0.2)
        yield base


@dataclass
class FaultyProxy:
    """Forwards every request to ``upstream`` while ``mode`` is "pass"; answers 503 in
    "error"; holds the request unanswered in "hang" (until the proxy stops)."""

    upstream: str
    mode: str = PASS
    requests: Counter[str] = field(default_factory=Counter)
    url: str = ""
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _http: aiohttp.ClientSession | None = None

    def runs(self) -> int:
        """The /run requests that reached the proxy, whatever it answered."""
        return self.requests["/run"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = "/" + request.path.strip("/").split("/")[0]
        self.requests[route] += 1
        if self.mode == ERROR:
            return web.json_response({"error": "upstream connect error"}, status=503)
        if self.mode == HANG:
            await self._released.wait()
            return web.json_response({"error": "gave up"}, status=504)
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            return web.Response(
                status=upstream.status,
                body=await upstream.read(),
                content_type=upstream.content_type,
            )


@contextlib.asynccontextmanager
async def faulty_proxy(upstream: str) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy(upstream)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
        proxy._http = http
        await site.start()
        proxy.url = f"http://127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            proxy._released.set()
            await runner.cleanup()
