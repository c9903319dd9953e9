"""The `uploads` table: multipart upload sessions, every query scoped by tenant but the sweep's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from comfyfleet.common.ids import new_id
from services.models.repository import DB

ID_PREFIX = "upl"
OPEN = "open"
COMPLETING = "completing"
COMPLETED = "completed"
REFUSED = "refused"
ABORTED = "aborted"
EXPIRED = "expired"

_COLUMNS = (
    "id, tenant, name, type, size_bytes, sha256, part_size, part_count, storage_key,"
    " s3_upload_id, state, model_id, created_at, updated_at, expire_time, request_id"
)


@dataclass(frozen=True)
class NewUpload:
    id: str
    tenant: str
    name: str
    kind: str
    size_bytes: int
    sha256: str | None
    part_size: int
    part_count: int
    storage_key: str
    s3_upload_id: str
    ttl_s: float
    request_id: str | None = None


@dataclass(frozen=True)
class UploadRecord:
    id: str
    tenant: str
    name: str
    kind: str
    size_bytes: int
    sha256: str | None
    part_size: int
    part_count: int
    storage_key: str
    s3_upload_id: str
    state: str
    model_id: str | None
    created_at: datetime
    updated_at: datetime
    expire_time: datetime
    request_id: str | None = None


def _record(row: asyncpg.Record) -> UploadRecord:
    return UploadRecord(
        id=row["id"],
        tenant=row["tenant"],
        name=row["name"],
        kind=row["type"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        part_size=row["part_size"],
        part_count=row["part_count"],
        storage_key=row["storage_key"],
        s3_upload_id=row["s3_upload_id"],
        state=row["state"],
        model_id=row["model_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expire_time=row["expire_time"],
        request_id=row["request_id"],
    )


def upload_id() -> str:
    return new_id(ID_PREFIX)


async def insert(db: DB, new: NewUpload) -> UploadRecord:
    row = await db.fetchrow(
        "INSERT INTO uploads (id, tenant, name, type, size_bytes, sha256, part_size, part_count,"
        " storage_key, s3_upload_id, expire_time, request_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11),"
        " $12)"
        f" RETURNING {_COLUMNS}",
        new.id,
        new.tenant,
        new.name,
        new.kind,
        new.size_bytes,
        new.sha256,
        new.part_size,
        new.part_count,
        new.storage_key,
        new.s3_upload_id,
        new.ttl_s,
        new.request_id,
    )
    assert row is not None
    return _record(row)


async def by_request_id(db: DB, tenant: str, request_id: str) -> UploadRecord | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM uploads WHERE tenant = $1 AND request_id = $2",
        tenant,
        request_id,
    )
    return _record(row) if row else None


async def get(db: DB, tenant: str, upload: str) -> UploadRecord | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM uploads WHERE tenant = $1 AND id = $2", tenant, upload
    )
    return _record(row) if row else None


async def begin_completion(db: DB, tenant: str, upload: str) -> UploadRecord | None:
    """Moves an open, unexpired upload to completing; None when it is not (any longer)."""
    row = await db.fetchrow(
        "UPDATE uploads SET state = 'completing', updated_at = now()"
        " WHERE tenant = $1 AND id = $2 AND state = 'open' AND expire_time > now()"
        f" RETURNING {_COLUMNS}",
        tenant,
        upload,
    )
    return _record(row) if row else None


async def move(
    db: DB, upload: str, from_state: str, to_state: str, model_id: str | None = None
) -> bool:
    """Changes the state if it is still `from_state`; whether it did."""
    done = await db.fetchval(
        "UPDATE uploads SET state = $3, model_id = coalesce($4, model_id), updated_at = now()"
        " WHERE id = $1 AND state = $2 RETURNING true",
        upload,
        from_state,
        to_state,
        model_id,
    )
    return bool(done)


async def expired(db: DB, stuck_after_s: float, limit: int) -> list[UploadRecord]:
    """Open uploads past their expiry, and completions no call has moved for `stuck_after_s`."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM uploads"
        " WHERE (state = 'open' AND expire_time <= now())"
        " OR (state = 'completing' AND updated_at <= now() - make_interval(secs => $1))"
        " ORDER BY expire_time LIMIT $2",
        stuck_after_s,
        limit,
    )
    return [_record(r) for r in rows]


async def forget_finished(db: DB, retention_s: float) -> int:
    """Deletes finished uploads older than `retention_s`; how many."""
    result = await db.execute(
        "DELETE FROM uploads WHERE state NOT IN ('open', 'completing')"
        " AND updated_at <= now() - make_interval(secs => $1)",
        retention_s,
    )
    return int(result.split()[-1])
