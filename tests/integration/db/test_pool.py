"""The services' pool (comfyfleet.common.db.Pool) when the server ends a pooled session.

PostgreSQL ends a session with a FATAL error, then closes it; here a TCP proxy between the
pool and the server keeps the client's side open after the server closed its side (as a
proxy or a slow network can), so that asyncpg has read the error long before the close —
the moment a restart of PostgreSQL gives every idle pooled connection for an instant.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from comfyfleet.common.db import open_pool


@dataclass
class HoldingProxy:
    """Forwards TCP to ``target``. Once ``hold`` is set, the next connection the server
    closes stays open on the client's side (and ``server_closed`` is set)."""

    target: tuple[str, int]
    hold: bool = False
    server_closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        for task in (self._pipe(reader, up_writer), self._pipe(up_reader, writer, server=True)):
            self._tasks.add(asyncio.create_task(task))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: bool = False
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        if server and self.hold:
            self.hold = False
            self.server_closed.set()  # and the client's side is left open
        else:
            writer.close()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, host: str, port: int) -> AsyncIterator[HoldingProxy]:
        proxy = cls((host, port))
        server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        try:
            yield proxy
        finally:
            server.close()
            for writer in proxy._writers:
                writer.close()
            for task in proxy._tasks:
                task.cancel()


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


STATEMENTS: dict[str, Callable[[Any], Awaitable[object]]] = {
    "execute": lambda pool: pool.execute("SELECT 1"),
    "fetch": lambda pool: pool.fetch("SELECT 1 AS one"),
    "fetchrow": lambda pool: pool.fetchrow("SELECT 1 AS one"),
    "fetchval": lambda pool: pool.fetchval("SELECT 1"),
}


@pytest.mark.parametrize("method", sorted(STATEMENTS))
async def test_a_statement_given_a_session_the_server_ended_goes_to_another(
    fresh_database: str, tmp_path: Path, method: str
) -> None:
    parts = urlsplit(fresh_database)
    assert parts.hostname is not None and parts.port is not None
    async with (
        HoldingProxy.running(parts.hostname, parts.port) as proxy,
        open_pool(through(fresh_database, proxy.port), "pooltest", tmp_path, max_size=1) as pool,
    ):
        ended = await pool.fetchval("SELECT pg_backend_pid()")
        proxy.hold = True
        admin = await asyncpg.connect(fresh_database)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", ended)
        finally:
            await admin.close()
        await proxy.server_closed.wait()
        # The pool's only connection has read the server's FATAL error and is still open.
        assert await STATEMENTS[method](pool) in ("SELECT 1", [(1,)], (1,), 1)
        assert await pool.fetchval("SELECT pg_backend_pid()") != ended
