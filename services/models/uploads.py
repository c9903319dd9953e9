"""Multipart uploads of large model files: the bytes go straight to object storage.

The client PUTs parts through presigned URLs; completing assembles them at a staging key of
the upload, then the file gets the same checks as a streamed upload (header, pickle, sha256)
before the registry copies it to its content-addressed key. A refused file is deleted and
nothing is registered. Uploads left open past their expiry are aborted by the sweep.
"""

from __future__ import annotations

import io
import logging
import re
import struct
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from comfyfleet.common.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from comfyfleet.common.storage import model_key
from comfyfleet.common.timeutil import utcnow
from services.models import upload_sessions as sessions
from services.models.inspection import FORMAT, inspect_stream
from services.models.multipart import MultipartStore, PartsRejected, UploadedPart, UploadGone
from services.models.registry import ModelRegistry, description_violations
from services.models.repository import ModelRecord, NewModel
from services.models.safetensors_format import LENGTH_BYTES, MAX_HEADER_BYTES
from services.models.spool import REASON_TOO_LARGE
from services.models.upload_sessions import NewUpload, UploadRecord

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# S3's bounds: parts of 5 MiB to 5 GiB (the last may be smaller).
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
# Below S3's 10,000 so the presigned URLs of one upload fit in a 4 MiB gRPC message.
MAX_PARTS = 2000
SWEEP_BATCH = 100

REASON_BAD_PARTS = "UPLOAD_PARTS_INVALID"
REASON_SIZE_MISMATCH = "UPLOAD_SIZE_MISMATCH"
REASON_SHA256_MISMATCH = "UPLOAD_SHA256_MISMATCH"
REASON_EXPIRED = "UPLOAD_EXPIRED"
REASON_FINISHED = "UPLOAD_FINISHED"
REASON_NOT_FOUND = "UPLOAD_NOT_FOUND"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(rf"{sessions.ID_PREFIX}_[0-9a-z]{{26}}")


@dataclass(frozen=True)
class UploadLimits:
    max_model_bytes: int
    default_part_size: int
    ttl_s: float
    stuck_after_s: float
    retention_s: float


@dataclass(frozen=True)
class PartTarget:
    number: int
    url: str


@dataclass(frozen=True)
class StartedUpload:
    id: str
    part_size: int
    parts: list[PartTarget]
    expire_time: datetime


@dataclass(frozen=True)
class UploadRequest:
    tenant: str
    name: str
    kind: str
    size_bytes: int
    sha256: str
    part_size: int
    # The caller's idempotency key; empty for none.
    request_id: str = ""


def upload_key(tenant: str, upload: str) -> str:
    """Where the parts of an upload assemble, apart from registered files."""
    return f"tenants/{tenant}/uploads/{upload}"


class ModelUploads:
    def __init__(self, pool: asyncpg.Pool, registry: ModelRegistry, limits: UploadLimits) -> None:
        self.pool = pool
        self.registry = registry
        self.multipart = MultipartStore(registry.store)
        self.limits = limits

    async def start(self, request: UploadRequest) -> StartedUpload:
        """Opens a multipart upload; checks the description before anything is stored."""
        part_size, part_count = self._parts(request)
        if request.request_id:
            prior = await sessions.by_request_id(self.pool, request.tenant, request.request_id)
            if prior is not None:
                return self._again(prior, request, part_size)
        upload = sessions.upload_id()
        key = upload_key(request.tenant, upload)
        s3_upload_id = await self.multipart.start(key)
        new = NewUpload(
            id=upload,
            tenant=request.tenant,
            name=request.name,
            kind=request.kind,
            size_bytes=request.size_bytes,
            sha256=request.sha256 or None,
            part_size=part_size,
            part_count=part_count,
            storage_key=key,
            s3_upload_id=s3_upload_id,
            ttl_s=self.limits.ttl_s,
            request_id=request.request_id or None,
        )
        try:
            record = await sessions.insert(self.pool, new)
        except asyncpg.UniqueViolationError:
            # A retry of the same start won the race: this one answers with its upload.
            await self.multipart.abort(key, s3_upload_id)
            prior = await sessions.by_request_id(self.pool, request.tenant, request.request_id)
            assert prior is not None
            return self._again(prior, request, part_size)
        except BaseException:
            await self.multipart.abort(key, s3_upload_id)
            raise
        return StartedUpload(record.id, part_size, self._targets(record), record.expire_time)

    def _again(self, prior: UploadRecord, request: UploadRequest, part_size: int) -> StartedUpload:
        """The upload a request_id opened before, if this request asks for the same file."""
        same = (
            prior.name == request.name
            and prior.kind == request.kind
            and prior.size_bytes == request.size_bytes
            and (prior.sha256 or "") == request.sha256
            and prior.part_size == part_size
        )
        if not same:
            raise InvalidArgument(
                "the request_id was already used for a different upload",
                [FieldViolation("request_id", "already used with other parameters", "REUSED")],
                reason="REQUEST_ID_REUSED",
            )
        return StartedUpload(prior.id, prior.part_size, self._targets(prior), prior.expire_time)

    def _targets(self, record: UploadRecord) -> list[PartTarget]:
        return [
            PartTarget(
                n,
                self.multipart.presign_part(
                    record.storage_key, record.s3_upload_id, n, self.limits.ttl_s
                ),
            )
            for n in range(1, record.part_count + 1)
        ]

    def _parts(self, request: UploadRequest) -> tuple[int, int]:
        """The part size and count; every problem of the request reported at once."""
        violations = description_violations(request.name, request.kind)
        violations += _size_violations(request.size_bytes, self.limits.max_model_bytes)
        if request.sha256 and not _SHA256.fullmatch(request.sha256):
            violations.append(FieldViolation("sha256", "sha256 must be 64 lowercase hex digits"))
        part_size = request.part_size or _default_part_size(
            request.size_bytes, self.limits.default_part_size
        )
        violations += _part_size_violations(request.part_size, request.size_bytes)
        if violations:
            raise InvalidArgument(
                "the upload request is invalid", violations, reason=violations[0].reason or None
            )
        return part_size, -(-request.size_bytes // part_size)

    async def complete(self, tenant: str, upload: str, parts: list[UploadedPart]) -> ModelRecord:
        """Assembles the parts, checks the file, and registers it; a retry gets the same model."""
        record = await self._get(tenant, upload)
        if record.state == sessions.COMPLETED and record.model_id:
            return await self.registry.get(tenant, record.model_id)
        _check_open(record)
        _check_parts(parts, record.part_count)
        started = await sessions.begin_completion(self.pool, tenant, upload)
        if started is None:
            # Another call moved it since we looked: answer as for its new state.
            _check_open(await self._get(tenant, upload))
            raise Aborted(f"upload {upload!r} changed state; try again", reason=REASON_FINISHED)
        try:
            await self.multipart.complete(started.storage_key, started.s3_upload_id, parts)
        except PartsRejected as err:
            await sessions.move(self.pool, upload, sessions.COMPLETING, sessions.OPEN)
            raise _parts_rejected(err) from None
        except UploadGone:
            await sessions.move(self.pool, upload, sessions.COMPLETING, sessions.ABORTED)
            raise FailedPrecondition(
                f"upload {upload!r} no longer exists in object storage; start a new one",
                reason=REASON_FINISHED,
            ) from None
        except BaseException:
            await sessions.move(self.pool, upload, sessions.COMPLETING, sessions.OPEN)
            raise
        return await self._register(started)

    async def _register(self, record: UploadRecord) -> ModelRecord:
        """Checks the assembled file; whatever happens, the staging object goes."""
        outcome = sessions.REFUSED
        model_id = None
        try:
            new = await self._checked(record)
            model = await self.registry.register_stored(new, record.storage_key)
            outcome, model_id = sessions.COMPLETED, model.id
            return model
        finally:
            await self.multipart.delete(record.storage_key)
            await sessions.move(self.pool, record.id, sessions.COMPLETING, outcome, model_id)

    async def _checked(self, record: UploadRecord) -> NewModel:
        """The same checks as a streamed upload, on the object in storage."""
        size = await self.registry.store.size(record.storage_key)
        if size != record.size_bytes:
            raise _refused(
                f"the parts hold {size} bytes, not the {record.size_bytes} given at start",
                REASON_SIZE_MISMATCH,
            )
        head = await self._head(record.storage_key, size)
        try:
            metadata = inspect_stream(io.BytesIO(head), size)
        except InvalidArgument as err:
            raise _as_parts_error(err) from None
        sha256 = await self.registry.store.sha256(record.storage_key)
        if record.sha256 and sha256 != record.sha256:
            raise _refused(
                f"the file's sha256 is {sha256}, not the {record.sha256} given at start",
                REASON_SHA256_MISMATCH,
            )
        return NewModel(
            tenant=record.tenant,
            name=record.name,
            kind=record.kind,
            sha256=sha256,
            size_bytes=size,
            format=FORMAT,
            metadata=metadata,
            storage_key=model_key(record.tenant, sha256),
        )

    async def _head(self, key: str, size: int) -> bytes:
        """The length prefix and, when its length is plausible, the JSON header after it."""
        prefix = await self.registry.store.get(key, 0, min(size, LENGTH_BYTES))
        if len(prefix) < LENGTH_BYTES:
            return prefix
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or LENGTH_BYTES + length > size:
            return prefix
        return prefix + await self.registry.store.get(key, LENGTH_BYTES, length)

    async def abort(self, tenant: str, upload: str) -> None:
        """Abandons an open upload; aborting one already abandoned changes nothing."""
        record = await self._get(tenant, upload)
        if record.state in (sessions.ABORTED, sessions.EXPIRED):
            return
        if not await sessions.move(self.pool, upload, sessions.OPEN, sessions.ABORTED):
            record = await self._get(tenant, upload)
            if record.state not in (sessions.ABORTED, sessions.EXPIRED):
                raise FailedPrecondition(
                    f"upload {upload!r} is {record.state} and cannot be aborted",
                    reason=REASON_FINISHED,
                )
            return
        await self.multipart.abort(record.storage_key, record.s3_upload_id)

    async def sweep(self) -> int:
        """Aborts expired uploads and completions that died half way; how many."""
        swept = 0
        for record in await sessions.expired(self.pool, self.limits.stuck_after_s, SWEEP_BATCH):
            # Free the storage first: a row marked expired is never looked at again.
            await self.multipart.abort(record.storage_key, record.s3_upload_id)
            await self.multipart.delete(record.storage_key)
            if await sessions.move(self.pool, record.id, record.state, sessions.EXPIRED):
                swept += 1
        await sessions.forget_finished(self.pool, self.limits.retention_s)
        return swept

    async def _get(self, tenant: str, upload: str) -> UploadRecord:
        if not upload:
            raise InvalidArgument(
                "the upload_id is required",
                [FieldViolation("upload_id", "the upload_id is required")],
            )
        record = await sessions.get(self.pool, tenant, upload) if _ID.fullmatch(upload) else None
        if record is None:
            raise NotFound(f"upload {upload!r} does not exist", reason=REASON_NOT_FOUND)
        return record


def _check_open(record: UploadRecord) -> None:
    # The database decides expiry when the completion begins; this is the early answer.
    if record.state == sessions.EXPIRED or (
        record.state == sessions.OPEN and record.expire_time <= utcnow()
    ):
        raise FailedPrecondition(
            f"upload {record.id!r} expired at {record.expire_time.isoformat()}; start a new one",
            reason=REASON_EXPIRED,
        )
    if record.state == sessions.COMPLETING:
        raise Aborted(f"upload {record.id!r} is being completed by another call; try again")
    if record.state != sessions.OPEN:
        raise FailedPrecondition(
            f"upload {record.id!r} is {record.state}; start a new one", reason=REASON_FINISHED
        )


def _size_violations(size: int, max_bytes: int) -> list[FieldViolation]:
    if size <= 0:
        return [FieldViolation("size_bytes", "size_bytes must be positive")]
    if size > max_bytes:
        description = f"the file is larger than the limit of {max_bytes} bytes"
        return [FieldViolation("size_bytes", description, REASON_TOO_LARGE)]
    return []


def _default_part_size(size: int, preferred: int) -> int:
    """The configured size, grown in whole MiB when the file would need too many parts."""
    smallest = -(-max(size, 1) // MAX_PARTS)
    return max(preferred, -(-smallest // MIB) * MIB)


def _part_size_violations(part_size: int, size: int) -> list[FieldViolation]:
    if part_size == 0:
        return []
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        description = f"part_size must be 0 or between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"
        return [FieldViolation("part_size", description)]
    if size > 0 and -(-size // part_size) > MAX_PARTS:
        description = (
            f"part_size makes more than {MAX_PARTS} parts; use at least {-(-size // MAX_PARTS)}"
        )
        return [FieldViolation("part_size", description)]
    return []


def _check_parts(parts: list[UploadedPart], count: int) -> None:
    """Every part from 1 to `count`, in order, each with its ETag."""
    violations = [
        FieldViolation(f"parts[{i}].etag", "the etag is required", REASON_BAD_PARTS)
        for i, part in enumerate(parts)
        if not part.etag.strip().strip('"')
    ]
    numbers = [p.number for p in parts]
    if numbers != list(range(1, count + 1)):
        violations.append(
            FieldViolation(
                "parts",
                f"the upload has {count} parts: list every part number from 1 to {count}"
                f" once, in order (got {_numbers_text(numbers)})",
                REASON_BAD_PARTS,
            )
        )
    if violations:
        raise InvalidArgument("the list of parts is invalid", violations, reason=REASON_BAD_PARTS)


def _numbers_text(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return f"[{shown}{', ...' if len(numbers) > 10 else ''}]"


def _parts_rejected(err: PartsRejected) -> InvalidArgument:
    description = f"object storage refused the parts ({err.code}): {err}"
    if err.code == "InvalidPart":
        description += "; send the ETag each part's PUT returned"
    return InvalidArgument(
        description,
        [FieldViolation("parts", description, REASON_BAD_PARTS)],
        reason=REASON_BAD_PARTS,
    )


def _refused(description: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        description, [FieldViolation("parts", description, reason)], reason=reason
    )


def _as_parts_error(err: InvalidArgument) -> InvalidArgument:
    """A streamed upload's file errors name its chunks; here the file is the parts."""
    violations = [
        FieldViolation("parts" if v.field == "chunk" else v.field, v.description, v.reason)
        for v in err.violations
    ]
    return InvalidArgument(err.message, violations, reason=err.reason)
