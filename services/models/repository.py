"""The `models` table: every query the registry makes, scoped by tenant."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from comfyfleet.common.ids import new_id

ID_PREFIX = "mdl"
# A pool or, inside a transaction, the connection that holds it.
DB: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_COLUMNS = (
    "id, tenant, name, type, version, sha256, size_bytes, format, metadata, storage_key, created_at"
)


@dataclass(frozen=True)
class NewModel:
    tenant: str
    name: str
    kind: str
    sha256: str
    size_bytes: int
    format: str
    metadata: dict[str, Any]
    storage_key: str


@dataclass(frozen=True)
class ModelRecord:
    id: str
    tenant: str
    name: str
    kind: str
    version: int
    sha256: str
    size_bytes: int
    format: str
    metadata: dict[str, Any]
    storage_key: str
    created_at: datetime


def _record(row: asyncpg.Record) -> ModelRecord:
    return ModelRecord(
        id=row["id"],
        tenant=row["tenant"],
        name=row["name"],
        kind=row["type"],
        version=row["version"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        format=row["format"],
        metadata=json.loads(row["metadata"]),
        storage_key=row["storage_key"],
        created_at=row["created_at"],
    )


@asynccontextmanager
async def locked(pool: asyncpg.Pool, *keys: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction holding advisory locks on `keys`, taken in the order given."""
    async with pool.acquire() as conn, conn.transaction():
        for key in keys:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
        yield conn


async def get(db: DB, tenant: str, model_id: str) -> ModelRecord | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM models WHERE tenant = $1 AND id = $2", tenant, model_id
    )
    return _record(row) if row else None


async def find_same(db: DB, tenant: str, name: str, kind: str, sha256: str) -> ModelRecord | None:
    """The newest version of name+kind with exactly these bytes, if one exists."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM models"
        " WHERE tenant = $1 AND name = $2 AND type = $3 AND sha256 = $4"
        " ORDER BY version DESC LIMIT 1",
        tenant,
        name,
        kind,
        sha256,
    )
    return _record(row) if row else None


async def insert_next_version(conn: asyncpg.Connection, new: NewModel) -> ModelRecord:
    """Inserts the next version of name+kind; numbers of deleted versions are not reused."""
    row = await conn.fetchrow(
        "WITH counter AS ("
        " INSERT INTO model_versions (tenant, name, type, last_version) VALUES ($2, $3, $4, 1)"
        " ON CONFLICT (tenant, name, type)"
        " DO UPDATE SET last_version = model_versions.last_version + 1"
        " RETURNING last_version)"
        " INSERT INTO models (id, tenant, name, type, version, sha256, size_bytes, format,"
        " metadata, storage_key)"
        " SELECT $1, $2, $3, $4, last_version, $5, $6, $7, $8::jsonb, $9 FROM counter"
        f" RETURNING {_COLUMNS}",
        new_id(ID_PREFIX),
        new.tenant,
        new.name,
        new.kind,
        new.sha256,
        new.size_bytes,
        new.format,
        json.dumps(new.metadata),
        new.storage_key,
    )
    assert row is not None
    return _record(row)


async def page(
    db: DB, tenant: str, kind: str | None, after_id: str | None, limit: int
) -> list[ModelRecord]:
    """Up to `limit` models in id order (upload order), after `after_id`."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM models"
        " WHERE tenant = $1 AND ($2::text IS NULL OR type = $2)"
        " AND ($3::text IS NULL OR id > $3)"
        " ORDER BY id LIMIT $4",
        tenant,
        kind,
        after_id,
        limit,
    )
    return [_record(r) for r in rows]


async def latest(
    db: DB, tenant: str, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], ModelRecord]:
    """The newest version of each (name, kind), for those that are registered."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    rows = await db.fetch(
        f"SELECT DISTINCT ON (name, type) {_COLUMNS} FROM models"
        " WHERE tenant = $1"
        " AND (name, type) IN (SELECT * FROM unnest($2::text[], $3::text[]))"
        " ORDER BY name, type, version DESC",
        tenant,
        [name for name, _ in pairs],
        [kind for _, kind in pairs],
    )
    records = [_record(r) for r in rows]
    return {(r.name, r.kind): r for r in records}


async def latest_by_name(db: DB, tenant: str, names: Iterable[str]) -> dict[str, list[ModelRecord]]:
    """The newest version of each type of model registered under each of ``names``."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = await db.fetch(
        f"SELECT DISTINCT ON (name, type) {_COLUMNS} FROM models"
        " WHERE tenant = $1 AND name = ANY($2::text[])"
        " ORDER BY name, type, version DESC",
        tenant,
        wanted,
    )
    out: dict[str, list[ModelRecord]] = {}
    for row in rows:
        record = _record(row)
        out.setdefault(record.name, []).append(record)
    return out


async def delete(db: DB, tenant: str, model_id: str) -> ModelRecord | None:
    row = await db.fetchrow(
        f"DELETE FROM models WHERE tenant = $1 AND id = $2 RETURNING {_COLUMNS}",
        tenant,
        model_id,
    )
    return _record(row) if row else None


async def is_storage_key_used(db: DB, storage_key: str) -> bool:
    used = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM models WHERE storage_key = $1)", storage_key
    )
    return bool(used)
