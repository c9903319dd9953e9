"""The migration runner against a real PostgreSQL: transactional files, and files that
build indexes CONCURRENTLY outside a transaction and must survive a crash part way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from comfyfleet.common.db import migrate, statements
from services.scheduler.server import MIGRATIONS as SCHEDULER_MIGRATIONS
from services.webhook.server import MIGRATIONS as WEBHOOK_MIGRATIONS

CONCURRENT_INDEX = """-- migrate: no-transaction
-- one code per row, checked by a unique index built while writers go on
DROP INDEX CONCURRENTLY IF EXISTS items_code;
CREATE UNIQUE INDEX CONCURRENTLY items_code
    ON items (code);
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


async def _index_state(conn: asyncpg.Connection, name: str, schema: str = "mig") -> bool | None:
    """Whether the index is valid; None when there is none."""
    valid: bool | None = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = $1 AND n.nspname = $2",
        name,
        schema,
    )
    return valid


async def test_a_concurrent_index_is_built_outside_a_transaction(
    fresh_database: str, tmp_path: Path
) -> None:
    folder = _write(
        tmp_path / "m",
        {
            "0001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL);",
            "0002_items_code.sql": CONCURRENT_INDEX,
        },
    )
    conn = await asyncpg.connect(fresh_database)
    try:
        before = await conn.fetchval("SHOW search_path")
        assert await migrate(conn, "mig", folder) == [1, 2]
        assert await _index_state(conn, "items_code") is True
        assert await conn.fetchval("SHOW search_path") == before
        assert await migrate(conn, "mig", folder) == []
        rows = await conn.fetch("SELECT version FROM mig.schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [1, 2]
    finally:
        await conn.close()


async def test_a_build_cut_short_is_started_over(fresh_database: str, tmp_path: Path) -> None:
    """A failed CONCURRENTLY build leaves an INVALID index and no record of the migration;
    the next start drops it and builds a valid one."""
    folder = _write(
        tmp_path / "m",
        {
            "0001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL);"
            " INSERT INTO items VALUES (1, 'a'), (2, 'a');",
            "0002_items_code.sql": CONCURRENT_INDEX,
        },
    )
    conn = await asyncpg.connect(fresh_database)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await migrate(conn, "mig", folder)
        assert await _index_state(conn, "items_code") is False
        assert await conn.fetchval("SELECT max(version) FROM mig.schema_migrations") == 1
        await conn.execute("UPDATE mig.items SET code = 'b' WHERE id = 2")
        assert await migrate(conn, "mig", folder) == [2]
        assert await _index_state(conn, "items_code") is True
    finally:
        await conn.close()


async def test_a_failing_transactional_migration_changes_nothing(
    fresh_database: str, tmp_path: Path
) -> None:
    folder = _write(
        tmp_path / "m",
        {
            "0001_items.sql": "CREATE TABLE items (id int PRIMARY KEY);",
            "0002_broken.sql": "ALTER TABLE items ADD COLUMN code text; SELECT 1/0;",
        },
    )
    conn = await asyncpg.connect(fresh_database)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, "mig", folder)
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'mig' AND table_name = 'items'"
        )
        assert [c["column_name"] for c in columns] == ["id"]
        assert await conn.fetchval("SELECT max(version) FROM mig.schema_migrations") == 1
    finally:
        await conn.close()


async def test_replicas_starting_together_both_migrate_a_concurrent_index(
    fresh_database: str, tmp_path: Path
) -> None:
    """The second replica waits for the first one's lock while the first builds an index
    CONCURRENTLY, which waits for every older snapshot: a waiter must hold none, or the two
    deadlock (and one replica fails to start)."""
    folder = _write(
        tmp_path / "m",
        {
            "0001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL);"
            " SELECT pg_sleep(0.5);",
            "0002_items_code.sql": CONCURRENT_INDEX,
        },
    )
    conns = [await asyncpg.connect(fresh_database) for _ in range(2)]
    try:
        applied = await asyncio.gather(*(migrate(c, "mig", folder) for c in conns))
        assert sorted(applied) == [[], [1, 2]]
        assert await _index_state(conns[0], "items_code") is True
    finally:
        for conn in conns:
            await conn.close()


@pytest.mark.parametrize(
    ("schema", "folder", "indexes"),
    [
        ("scheduler", SCHEDULER_MIGRATIONS, ["executions_labels", "executions_waiting_not_before"]),
        ("webhook", WEBHOOK_MIGRATIONS, ["deliveries_finished"]),
    ],
)
async def test_the_services_concurrent_indexes_come_out_valid(
    fresh_database: str, schema: str, folder: Path, indexes: list[str]
) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate(conn, schema, folder)
        for name in indexes:
            assert await _index_state(conn, name, schema) is True, name
    finally:
        await conn.close()


def test_statements_split_after_lines_ending_with_a_semicolon() -> None:
    assert statements(CONCURRENT_INDEX) == [
        "-- migrate: no-transaction\n-- one code per row, checked by a unique index built"
        " while writers go on\nDROP INDEX CONCURRENTLY IF EXISTS items_code;",
        "CREATE UNIQUE INDEX CONCURRENTLY items_code\n    ON items (code);",
    ]
    assert statements("SELECT 1;\n-- a closing comment\n") == ["SELECT 1;"]
    with pytest.raises(RuntimeError, match="must end with ';'"):
        statements("SELECT 1;\nSELECT 2\n")
