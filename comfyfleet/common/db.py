"""PostgreSQL access: one pool per service, bound to the service's own schema and migrations."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

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


async def migrate(conn: asyncpg.Connection, schema: str, directory: Path) -> list[int]:
    """Applies the migrations not yet applied, each in its own transaction.

    An advisory lock keyed on the schema lets several replicas start at once.
    """
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", schema)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]
            for r in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")
        }
        for version, path in migration_files(directory):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {schema}")
                await conn.execute(path.read_text())
                await conn.execute(
                    f"INSERT INTO {schema}.schema_migrations (version) VALUES ($1)", version
                )
            log.info("applied migration %s.%s", schema, path.name)
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", schema)
    return applied


@asynccontextmanager
async def open_pool(
    url: str, schema: str, migrations: Path, *, min_size: int = 1, max_size: int = 10
) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections use ``schema``, after applying its migrations."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, schema, migrations)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema},
    )
    try:
        yield pool
    finally:
        await pool.close()
