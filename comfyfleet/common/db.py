"""PostgreSQL access: one pool per service, bound to the service's own schema and migrations."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    """The ``NNNN_name.sql`` files of a migrations folder, in order; gaps are an error."""
    found = sorted(
        (int(m.group(1)), p) for p in directory.iterdir() if (m := _MIGRATION_NAME.match(p.name))
    )
    for expected, (version, path) in enumerate(found, start=1):
        if version != expected:
            raise RuntimeError(f"migration {path.name}: expected number {expected:04d}")
    return found


NO_TRANSACTION = "-- migrate: no-transaction"
"""First line of a migration that must run outside a transaction (``CREATE INDEX
CONCURRENTLY`` on a table that may already be large): its statements, each ending a line
with ``;``, run one at a time, so each must be safe to run again after a crash part way."""


def statements(sql: str) -> list[str]:
    """The statements of a no-transaction migration: the text split after lines ending ``;``."""
    found: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            found.append("\n".join(current).strip())
            current = []
    rest = "\n".join(current).strip()
    if any(not ln.strip().startswith("--") for ln in rest.splitlines() if ln.strip()):
        raise RuntimeError("a no-transaction migration's last statement must end with ';'")
    return [s for s in found if s]


async def migrate(conn: asyncpg.Connection, schema: str, directory: Path) -> list[int]:
    """Applies the migrations not yet applied, each in its own transaction, or statement by
    statement where the file starts with ``-- migrate: no-transaction``.

    An advisory lock keyed on the schema lets several replicas start at once.
    """
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    applied: list[int] = []
    await _lock_schema(conn, schema)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = await applied_versions(conn, schema)
        record = f"INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"
        for version, path in migration_files(directory):
            if version in done:
                continue
            sql = path.read_text()
            if sql.startswith(NO_TRANSACTION):
                await _run_outside_transaction(conn, schema, statements(sql))
                await conn.execute(record, version)
            else:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {schema}")
                    await conn.execute(sql)
                    await conn.execute(record, version)
            log.info("applied migration %s.%s", schema, path.name)
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", schema)
    return applied


MIGRATION_LOCK_POLL_S = 0.1


async def _lock_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Takes the schema's migration lock, asking again until it is free.

    Not ``pg_advisory_lock``: a session blocked in it holds a snapshot, and ``CREATE INDEX
    CONCURRENTLY`` in the replica holding the lock waits for every older snapshot to go, so
    two replicas starting together would deadlock. Between tries this session holds none.
    """
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", schema):
            return
        await asyncio.sleep(MIGRATION_LOCK_POLL_S)


class SchemaBehind(RuntimeError):
    """Migrations this build needs are not applied, and the service may not apply them."""

    def __init__(self, schema: str, missing: list[str]) -> None:
        super().__init__(
            f"schema {schema!r} lacks migrations {', '.join(missing)}: apply them with"
            " `python -m services.migrate`, or set COMFYFLEET_MIGRATE_ON_START=true"
        )
        self.schema = schema
        self.missing = missing


async def applied_versions(conn: asyncpg.Connection, schema: str) -> set[int]:
    """The versions recorded in the schema's ``schema_migrations``; none when it has none."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.schema_migrations")
    if exists is None:
        return set()
    rows = await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")
    return {r["version"] for r in rows}


async def pending(conn: asyncpg.Connection, schema: str, directory: Path) -> list[tuple[int, Path]]:
    """The migration files of ``directory`` not yet applied to ``schema``, in order."""
    done = await applied_versions(conn, schema)
    return [(v, p) for v, p in migration_files(directory) if v not in done]


async def _run_outside_transaction(conn: asyncpg.Connection, schema: str, sqls: list[str]) -> None:
    previous = await conn.fetchval("SHOW search_path")
    await conn.execute(f"SET search_path TO {schema}")
    try:
        for sql in sqls:
            await conn.execute(sql)
    finally:
        await conn.execute("SELECT set_config('search_path', $1, false)", previous)


class Pool(asyncpg.Pool):
    """asyncpg's pool, whose one-statement methods send a statement again on another
    connection when the one they were given had been ended by the server.

    The server ends a session (shutting down, ``pg_terminate_backend``, an idle timeout, a
    proxy failing over) by sending it a FATAL error, then closing it. asyncpg reads the error
    first and parks an idle connection in its error-consuming state until it reads the close;
    a statement the pool hands that connection in between is refused before anything is sent
    (``cannot switch to state 12; another operation (2) is in progress``). Nothing reached the
    server, so sending it again on another connection is safe. Every other failure is the
    caller's, as are statements in ``acquire()`` blocks.
    """

    __slots__ = ()

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        result: str = await self._statement("execute", query, *args, **kwargs)
        return result

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        result: list[Any] = await self._statement("fetch", query, *args, **kwargs)
        return result

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._statement("fetchval", query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._statement("fetchrow", query, *args, **kwargs)

    async def _statement(self, method: str, *args: Any, **kwargs: Any) -> Any:
        for again in (True, False):
            conn = await self.acquire()
            try:
                return await getattr(conn, method)(*args, **kwargs)
            except asyncpg.InternalClientError as err:
                if not (again and ended_by_server(err)):
                    raise
                conn.terminate()  # its holder goes back to the pool, to connect anew
            finally:
                await self.release(conn)
        raise AssertionError("unreachable")


def ended_by_server(err: asyncpg.InternalClientError) -> bool:
    """Whether asyncpg refused a statement, unsent, on a connection still reading the
    server's error (its state 2) — what a connection the server ended looks like."""
    return "another operation (2) is in progress" in str(err)


@asynccontextmanager
async def open_pool(
    url: str,
    schema: str,
    migrations: Path,
    *,
    min_size: int = 1,
    max_size: int = 10,
    apply: bool = True,
) -> AsyncIterator[asyncpg.Pool]:
    """A pool (a :class:`Pool`) whose connections use ``schema``, after applying its
    migrations; with ``apply`` false, after checking that none is left to apply (else
    `SchemaBehind`)."""
    conn = await asyncpg.connect(url)
    try:
        if apply:
            await migrate(conn, schema, migrations)
        elif missing := await pending(conn, schema, migrations):
            raise SchemaBehind(schema, [path.name for _, path in missing])
    finally:
        await conn.close()
    pool = await Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema},
        # asyncpg.create_pool's defaults, which the Pool constructor wants spelled out.
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    try:
        yield pool
    finally:
        await pool.close()
