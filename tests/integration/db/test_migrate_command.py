"""``python -m services.migrate`` and services that leave migrations to it, against a real
PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from comfyfleet.common.db import SchemaBehind, migration_files, open_pool
from services.migrate import SERVICES

ROOT = Path(__file__).resolve().parents[3]


def _migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYFLEET_")}
    env["COMFYFLEET_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "services.migrate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _count(service: str) -> int:
    return len(migration_files(ROOT / "services" / service / "migrations"))


def test_status_then_apply_then_nothing_left(fresh_database: str) -> None:
    before = _migrate(fresh_database, "--status")
    assert before.returncode == 1, before.stderr
    for service in SERVICES:
        assert f"{service} (schema {service}): 0/{_count(service)} applied; pending: 0001_" in (
            before.stdout
        )

    partial = _migrate(fresh_database, "scheduler")
    assert partial.returncode == 0, partial.stderr
    assert f"scheduler: applied {_count('scheduler')} migration(s)" in partial.stdout
    assert _migrate(fresh_database, "--status", "scheduler").returncode == 0
    assert _migrate(fresh_database, "--status").returncode == 1  # the others still wait

    everything = _migrate(fresh_database)
    assert everything.returncode == 0, everything.stderr
    assert "scheduler: applied 0 migration(s)" in everything.stdout
    after = _migrate(fresh_database, "--status")
    assert after.returncode == 0
    assert "pending" not in after.stdout


def test_a_database_ahead_of_the_build_is_reported(fresh_database: str) -> None:
    assert _migrate(fresh_database, "webhook").returncode == 0
    ahead = _count("webhook") + 1

    async def record() -> None:
        conn = await asyncpg.connect(fresh_database)
        try:
            await conn.execute("INSERT INTO webhook.schema_migrations (version) VALUES ($1)", ahead)
        finally:
            await conn.close()

    asyncio.run(record())
    out = _migrate(fresh_database, "--status", "webhook")
    assert out.returncode == 0
    assert f"applied by a newer build: [{ahead}]" in out.stdout


def test_bad_arguments_and_an_unreachable_database_are_clear_errors(fresh_database: str) -> None:
    unknown = _migrate(fresh_database, "executor")
    assert unknown.returncode == 2
    assert "no migrations for 'executor'" in unknown.stderr
    down = _migrate("postgresql://postgres@127.0.0.1:1/none", "--status")
    assert down.returncode == 2
    assert down.stderr.startswith("error: ")
    assert "Traceback" not in down.stderr


async def test_a_service_that_may_not_migrate_refuses_a_schema_behind(
    fresh_database: str,
) -> None:
    directory = ROOT / "services" / "models" / "migrations"
    with pytest.raises(SchemaBehind, match=r"python -m services\.migrate") as behind:
        async with open_pool(fresh_database, "models", directory, apply=False):
            pass
    assert behind.value.missing == [p.name for _, p in migration_files(directory)]
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('models.schema_migrations')") is None
    finally:
        await conn.close()

    done = await asyncio.to_thread(_migrate, fresh_database, "models")
    assert done.returncode == 0, done.stderr
    async with open_pool(fresh_database, "models", directory, apply=False) as pool:
        assert await pool.fetchval("SELECT count(*) FROM models") == 0
