"""Large input files uploaded by the client straight to object storage.

``CreateInputUpload`` records an upload (its declared size and, optionally, sha256) and hands
out a presigned PUT URL for a staging key under the tenant's prefix. An execution names the
upload with ``InputFile.upload_id``; at submit time the staged file is copied server-side to
the execution's own input key and the copy is checked against what was declared, so what the
executor reads can no longer change, whatever happens to the upload afterwards. An upload may
serve several executions until it expires; a periodic sweep then deletes it and its file.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from comfyfleet.common.errors import FieldViolation, InvalidArgument, Unavailable
from comfyfleet.common.ids import new_id
from comfyfleet.common.storage import ObjectStore, input_key
from comfyfleet.common.timeutil import to_timestamp, utcnow
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.config import SchedulerSettings
from services.scheduler.notify import wait_any
from services.scheduler.records import InputRecord
from services.scheduler.requests import MAX_REQUEST_ID, NewInput

log = logging.getLogger(__name__)

MAX_NAME = 255
MAX_CONTENT_TYPE = 255
SWEEP_BATCH = 500
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
INVALID_UPLOAD = "INPUT_UPLOAD_INVALID"


def upload_key(tenant: str, upload_id: str) -> str:
    """Where an upload's file is staged: under the tenant's prefix, apart from executions."""
    return f"tenants/{tenant}/uploads/{upload_id}"


@dataclass(frozen=True)
class NewUpload:
    """A CreateInputUploadRequest that passed validation."""

    name: str
    size_bytes: int
    sha256: str
    content_type: str
    request_id: str | None

    def same_file(self, record: UploadRecord) -> bool:
        return (self.name, self.size_bytes, self.sha256, self.content_type) == (
            record.name,
            record.size_bytes,
            record.sha256,
            record.content_type,
        )


@dataclass(frozen=True)
class UploadRecord:
    """One row of ``input_uploads``."""

    id: str
    tenant: str
    name: str
    key: str
    size_bytes: int
    sha256: str
    content_type: str
    request_id: str | None
    created_at: datetime
    url_expires_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> UploadRecord:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Refusal:
    """Why an input cannot use the upload it names."""

    description: str
    reason: str

    def at(self, index: int) -> FieldViolation:
        return FieldViolation(f"inputs[{index}].upload_id", self.description, self.reason)


@dataclass(frozen=True)
class CreatedUpload:
    record: UploadRecord
    upload_url: str


def parse_upload_request(
    request: executions_pb2.CreateInputUploadRequest, settings: SchedulerSettings
) -> NewUpload:
    """Checks every field at once; nothing is recorded when one is bad."""
    violations: list[FieldViolation] = []
    if len(request.name) > MAX_NAME or not request.name.isprintable():
        violations.append(
            FieldViolation("name", f"at most {MAX_NAME} printable characters, or empty")
        )
    if not 0 < request.size_bytes <= settings.upload_max_bytes:
        violations.append(
            FieldViolation("size_bytes", f"must be between 1 and {settings.upload_max_bytes} bytes")
        )
    sha256 = request.sha256.lower()
    if sha256 and not _SHA256.match(sha256):
        violations.append(FieldViolation("sha256", "64 hex digits, or empty"))
    if len(request.content_type) > MAX_CONTENT_TYPE or not request.content_type.isprintable():
        violations.append(
            FieldViolation("content_type", f"at most {MAX_CONTENT_TYPE} printable characters")
        )
    if len(request.request_id) > MAX_REQUEST_ID:
        violations.append(FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters"))
    if violations:
        raise InvalidArgument("the upload request is invalid", violations)
    guessed = mimetypes.guess_type(request.name)[0] if request.name else None
    return NewUpload(
        name=request.name,
        size_bytes=request.size_bytes,
        sha256=sha256,
        content_type=request.content_type or guessed or "application/octet-stream",
        request_id=request.request_id or None,
    )


class Uploads:
    """Input uploads of every tenant: created, used by executions, and swept when expired."""

    def __init__(
        self, pool: asyncpg.Pool, objects: ObjectStore, settings: SchedulerSettings
    ) -> None:
        self.pool = pool
        self.objects = objects
        self.settings = settings

    async def create(
        self, tenant: str, request: executions_pb2.CreateInputUploadRequest
    ) -> CreatedUpload:
        """Records the upload and presigns its PUT; a retried request_id returns the first."""
        new = parse_upload_request(request, self.settings)
        upload_id = new_id("upl")
        row = await self.pool.fetchrow(
            "INSERT INTO input_uploads (id, tenant, name, key, size_bytes, sha256, content_type,"
            " request_id, url_expires_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
            " now() + make_interval(secs => $9), now() + make_interval(secs => $10))"
            " ON CONFLICT (tenant, request_id) DO NOTHING RETURNING *",
            upload_id,
            tenant,
            new.name,
            upload_key(tenant, upload_id),
            new.size_bytes,
            new.sha256,
            new.content_type,
            new.request_id,
            self.settings.upload_url_ttl_s,
            self.settings.upload_ttl_s,
        )
        if row is None:  # the request_id was used before: answer with that upload
            row = await self.pool.fetchrow(
                "SELECT * FROM input_uploads WHERE tenant = $1 AND request_id = $2",
                tenant,
                new.request_id,
            )
            if row is None:  # swept since: the retry came after the upload expired
                raise InvalidArgument(
                    "the upload made with this request_id has expired",
                    [FieldViolation("request_id", "its upload expired; use a new request_id")],
                )
            if not new.same_file(UploadRecord.from_row(row)):
                raise InvalidArgument(
                    "the request_id was already used for a different request",
                    [FieldViolation("request_id", "already used with other parameters", "REUSED")],
                    reason="REQUEST_ID_REUSED",
                )
        record = UploadRecord.from_row(row)
        return CreatedUpload(record, self._presign(record))

    def _presign(self, record: UploadRecord) -> str:
        """A PUT URL that stops working at the upload's URL expiry, not later."""
        remaining = (record.url_expires_at - utcnow()).total_seconds()
        return self.objects.presign_put(record.key, max(remaining, 1.0))

    async def take(
        self, tenant: str, execution_id: str, inputs: Sequence[NewInput]
    ) -> list[InputRecord]:
        """Copies the uploads the inputs name to the execution's input keys, checked against
        what each upload declared. Every problem is reported at once, naming
        ``inputs[i].upload_id``, and then no copy is left behind."""
        named = [(i, item) for i, item in enumerate(inputs) if item.upload_id]
        if not named:
            return []
        found = await self._live(tenant, [item.upload_id for _, item in named])
        violations = [
            refusal.at(i)
            for i, item in named
            if isinstance(refusal := found[item.upload_id], Refusal)
        ]
        _raise_if(violations)
        copies: list[InputRecord] = []
        try:
            for i, item in named:
                record = found[item.upload_id]
                assert isinstance(record, UploadRecord)
                copy, problem = await self._copy(record, tenant, execution_id, item)
                if copy is not None:
                    copies.append(copy)
                if problem is not None:
                    violations.append(problem.at(i))
            _raise_if(violations)
        except InvalidArgument:
            await self.discard(copies)
            raise
        except Exception as err:
            log.exception("copying the uploads of %s failed", execution_id)
            await self.discard(copies)
            raise Unavailable("copying the uploaded input files failed; try again") from err
        return copies

    async def _live(self, tenant: str, upload_ids: list[str]) -> dict[str, UploadRecord | Refusal]:
        """Each id's upload, or why it cannot be used. Another tenant's upload reads as one
        that does not exist."""
        rows = await self.pool.fetch(
            "SELECT *, expires_at <= now() AS expired FROM input_uploads"
            " WHERE tenant = $1 AND id = ANY($2)",
            tenant,
            upload_ids,
        )
        out: dict[str, UploadRecord | Refusal] = {
            i: Refusal("no upload with this id", "UPLOAD_NOT_FOUND") for i in upload_ids
        }
        for row in rows:
            record = UploadRecord.from_row(row)
            out[record.id] = (
                Refusal(f"the upload expired at {record.expires_at.isoformat()}", "UPLOAD_EXPIRED")
                if row["expired"]
                else record
            )
        return out

    async def _copy(
        self, upload: UploadRecord, tenant: str, execution_id: str, item: NewInput
    ) -> tuple[InputRecord | None, Refusal | None]:
        """The execution's own copy of the upload, and what is wrong with it, if anything."""
        key = input_key(tenant, execution_id, item.name)
        if not await self.objects.copy(upload.key, key):
            return None, Refusal(
                "nothing was uploaded: PUT the file to the upload's upload_url first",
                "UPLOAD_EMPTY",
            )
        copy = InputRecord(
            item.name,
            key,
            upload.size_bytes,
            item.content_type or upload.content_type,
            upload.sha256,
        )
        size = await self.objects.size(key)
        if size != upload.size_bytes:
            return copy, Refusal(
                f"the uploaded file has {size} bytes; the upload declared {upload.size_bytes}",
                "UPLOAD_SIZE_MISMATCH",
            )
        if upload.sha256 and await self.objects.sha256(key) != upload.sha256:
            return copy, Refusal(
                "the uploaded file's sha256 differs from the one the upload declared",
                "UPLOAD_SHA256_MISMATCH",
            )
        return copy, None

    async def discard(self, copies: Sequence[InputRecord]) -> None:
        for copy in copies:
            try:
                await self.objects.delete(copy.key)
            except Exception:
                log.warning("could not delete the input copy %s", copy.key, exc_info=True)

    async def sweep(self, limit: int = SWEEP_BATCH) -> int:
        """Deletes expired uploads, their staged file first so none is left unrecorded;
        returns how many went. Replicas may sweep at once: deleting twice is harmless."""
        rows = await self.pool.fetch(
            "SELECT id, key FROM input_uploads WHERE expires_at <= now()"
            " ORDER BY expires_at LIMIT $1",
            limit,
        )
        gone: list[str] = []
        for row in rows:
            try:
                await self.objects.delete(row["key"])
            except Exception:
                log.warning("could not delete the staged upload %s", row["key"], exc_info=True)
                continue
            gone.append(row["id"])
        if gone:
            await self.pool.execute("DELETE FROM input_uploads WHERE id = ANY($1)", gone)
        return len(gone)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while await self.sweep() == SWEEP_BATCH:
                    pass
            except Exception:
                log.exception("upload sweep failed")
            await wait_any([stop], self.settings.upload_sweep_interval_s)


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(
            "an uploaded input file cannot be used", violations, reason=INVALID_UPLOAD
        )


def upload_proto(created: CreatedUpload) -> executions_pb2.InputUpload:
    record = created.record
    return executions_pb2.InputUpload(
        id=record.id,
        name=record.name,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        content_type=record.content_type,
        upload_url=created.upload_url,
        upload_headers={"Content-Type": record.content_type},
        upload_url_expire_time=to_timestamp(record.url_expires_at),
        expire_time=to_timestamp(record.expires_at),
        create_time=to_timestamp(record.created_at),
        request_id=record.request_id or "",
    )
