"""The model registry: uploads, lookups, deletion and workflow resolution, per tenant."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from comfyfleet.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from comfyfleet.common.storage import ObjectStore, model_key
from services.models import repository
from services.models.inspection import FORMAT, inspect_file, name_violations
from services.models.kinds import FOLDER_OF_KIND, KINDS, folder_of
from services.models.references import ModelReference, find_references
from services.models.repository import ModelRecord, NewModel
from services.models.spool import SpooledFile, spool

CONTENT_TYPE = "application/octet-stream"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_TOKEN_PREFIX = "after:"
_ID = re.compile(rf"{repository.ID_PREFIX}_[0-9a-z]{{26}}")
# Folder names ComfyUI still accepts for the ones that replaced them.
FOLDER_ALIASES = {"clip": "text_encoders", "unet": "diffusion_models"}


@dataclass(frozen=True)
class RegistryLimits:
    max_model_bytes: int
    presign_ttl_s: float
    part_size: int
    spool_dir: Path | None = None


@dataclass(frozen=True)
class ResolvedModel:
    reference: ModelReference
    model: ModelRecord
    download_url: str
    folder: str


class ModelRegistry:
    def __init__(self, pool: asyncpg.Pool, store: ObjectStore, limits: RegistryLimits) -> None:
        self.pool = pool
        self.store = store
        self.limits = limits

    async def upload(
        self, tenant: str, name: str, kind: str, chunks: AsyncIterable[bytes]
    ) -> ModelRecord:
        """Stores a new version, or returns the version that already has these bytes.

        The name and kind are checked before a byte is read; the file before anything is
        stored, so a refused upload leaves no row and no object behind.
        """
        check_description(name, kind)
        async with spool(
            chunks, max_bytes=self.limits.max_model_bytes, directory=self.limits.spool_dir
        ) as file:
            metadata = await asyncio.to_thread(inspect_file, file.path)
            same = await repository.find_same(self.pool, tenant, name, kind, file.sha256)
            if same is not None:
                return same
            new = NewModel(
                tenant=tenant,
                name=name,
                kind=kind,
                sha256=file.sha256,
                size_bytes=file.size,
                format=FORMAT,
                metadata=metadata,
                storage_key=model_key(tenant, file.sha256),
            )
            return await self._register(new, lambda: self._ensure_object(new.storage_key, file))

    async def register_stored(self, new: NewModel, source_key: str) -> ModelRecord:
        """Registers a checked file that already lies in object storage at `source_key`.

        The file is copied inside object storage to its content-addressed key; the caller
        deletes `source_key` afterwards.
        """
        same = await repository.find_same(self.pool, new.tenant, new.name, new.kind, new.sha256)
        if same is not None:
            return same
        return await self._register(
            new, lambda: self._ensure_copied(new.storage_key, new.size_bytes, source_key)
        )

    async def _register(
        self, new: NewModel, ensure_object: Callable[[], Awaitable[None]]
    ) -> ModelRecord:
        await ensure_object()
        try:
            return await self._insert(new, ensure_object)
        except Exception:
            await self._drop_if_unused(new.storage_key)
            raise

    async def _insert(
        self, new: NewModel, ensure_object: Callable[[], Awaitable[None]]
    ) -> ModelRecord:
        name_lock = "models:name:" + json.dumps([new.tenant, new.name, new.kind])
        async with repository.locked(self.pool, name_lock, _object_lock(new.storage_key)) as conn:
            # A concurrent upload of the same bytes may have won while ours was on its way.
            same = await repository.find_same(conn, new.tenant, new.name, new.kind, new.sha256)
            if same is not None:
                return same
            # ... and a concurrent delete may have removed the file, which no row used then.
            await ensure_object()
            return await repository.insert_next_version(conn, new)

    async def _ensure_object(self, key: str, file: SpooledFile) -> None:
        # The key is the content hash: an object of the right size already holds these bytes.
        if await self.store.size(key) != file.size:
            await self.store.put_file(
                key, file.path, file.size, CONTENT_TYPE, part_size=self.limits.part_size
            )

    async def _ensure_copied(self, key: str, size: int, source_key: str) -> None:
        if await self.store.size(key) != size and not await self.store.copy(source_key, key):
            raise FailedPrecondition(
                f"the uploaded file {source_key} is gone", reason="UPLOAD_GONE"
            )

    async def _drop_if_unused(self, storage_key: str) -> None:
        """Deletes a stored file no row refers to; uploads of it wait on the same lock."""
        async with repository.locked(self.pool, _object_lock(storage_key)) as conn:
            if not await repository.is_storage_key_used(conn, storage_key):
                await self.store.delete(storage_key)

    async def get(self, tenant: str, model_id: str) -> ModelRecord:
        _require_id(model_id)
        record = await repository.get(self.pool, tenant, model_id) if _is_id(model_id) else None
        if record is None:
            raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
        return record

    async def list_page(
        self, tenant: str, kind: str | None, page_size: int, page_token: str
    ) -> tuple[list[ModelRecord], str]:
        """One page in upload order, and the token of the next page ("" after the last)."""
        limit = _page_size(page_size)
        after = _decode_token(page_token)
        records = await repository.page(self.pool, tenant, kind, after, limit + 1)
        if len(records) <= limit:
            return records, ""
        return records[:limit], _encode_token(records[limit - 1].id)

    async def delete(self, tenant: str, model_id: str) -> None:
        _require_id(model_id)
        record = await repository.delete(self.pool, tenant, model_id) if _is_id(model_id) else None
        if record is None:
            raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
        # Other names (or versions) of the same bytes share the file.
        await self._drop_if_unused(record.storage_key)

    async def resolve(self, tenant: str, workflow_json: str) -> list[ResolvedModel]:
        """Each model reference with the newest registered version and a download URL.

        Every reference to a model that is not registered is reported at once.
        """
        refs = find_references(workflow_json)
        # A name no upload could have used is missing without asking the database.
        wanted = {(r.name, r.kind) for r in refs if not name_violations(r.name)}
        found = await repository.latest(self.pool, tenant, wanted)
        missing = [r for r in refs if (r.name, r.kind) not in found]
        if missing:
            raise InvalidArgument(
                "the workflow names models that are not registered",
                [_unregistered(r) for r in missing],
                reason="MODEL_NOT_REGISTERED",
            )
        return [self._resolved(r, found[(r.name, r.kind)]) for r in refs]

    async def resolve_references(
        self, tenant: str, refs: Sequence[FolderReference]
    ) -> list[ResolvedModel]:
        """Each reference (found by the caller from an environment's catalog) with the
        newest registered version and a download URL: a reference with a folder takes the
        model whose type lives in that folder, one without takes the name's model of any
        type (the newest upload when several types share the name).

        Every reference to a model that is not registered is reported at once.
        """
        violations = reference_violations(refs)
        if violations:
            raise InvalidArgument("the model references are invalid", violations)
        names = {r.name for r in refs if not name_violations(r.name)}
        found = await repository.latest_by_name(self.pool, tenant, names)
        picked = [(r, _pick(found.get(r.name, []), r.folder)) for r in refs]
        missing = [r for r, record in picked if record is None]
        if missing:
            raise InvalidArgument(
                "the workflow names models that are not registered",
                [_unregistered_in_folder(r) for r in missing],
                reason="MODEL_NOT_REGISTERED",
            )
        return [self._resolved(r.reference, record) for r, record in picked if record]

    def _resolved(self, ref: ModelReference, record: ModelRecord) -> ResolvedModel:
        url = self.store.presign_get(record.storage_key, self.limits.presign_ttl_s)
        return ResolvedModel(ref, record, url, folder_of(record.kind))


@dataclass(frozen=True)
class FolderReference:
    """A model reference as ResolveModelsRequest.references gives it: by ComfyUI folder."""

    node_id: str
    input_name: str
    name: str
    # "" when the caller's catalog did not say.
    folder: str

    @property
    def field(self) -> str:
        return f'workflow["{self.node_id}"].inputs.{self.input_name}'

    @property
    def reference(self) -> ModelReference:
        return ModelReference(self.node_id, self.input_name, self.name, kind_in(self.folder))


def kind_in(folder: str) -> str:
    """The kind of model ComfyUI keeps in ``folder``; "" when none (or no folder)."""
    folder = FOLDER_ALIASES.get(folder, folder)
    return next((k for k, f in FOLDER_OF_KIND.items() if f == folder), "")


def reference_violations(refs: Sequence[FolderReference]) -> list[FieldViolation]:
    out = []
    for i, ref in enumerate(refs):
        for name in ("node_id", "input_name", "name"):
            if not getattr(ref, name):
                out.append(FieldViolation(f"references[{i}].{name}", f"{name} is required"))
    return out


def _pick(records: Sequence[ModelRecord], folder: str) -> ModelRecord | None:
    if folder:
        kind = kind_in(folder)
        records = [r for r in records if r.kind == kind]
    return max(records, key=lambda r: (r.created_at, r.id), default=None)


def _unregistered_in_folder(ref: FolderReference) -> FieldViolation:
    where = f" in {ref.folder}" if ref.folder else ""
    return FieldViolation(
        ref.field, f"the model {ref.name!r}{where} is not registered", "MODEL_NOT_REGISTERED"
    )


def check_description(name: str, kind: str) -> None:
    """The name and kind of an upload, checked before any byte is read."""
    violations = description_violations(name, kind)
    if violations:
        raise InvalidArgument(
            "the model description is invalid", violations, reason=violations[0].reason or None
        )


def description_violations(name: str, kind: str) -> list[FieldViolation]:
    violations = name_violations(name)
    if kind not in KINDS:
        violations.append(FieldViolation("model.type", "the model type is required"))
    return violations


def _object_lock(storage_key: str) -> str:
    return f"models:object:{storage_key}"


def _unregistered(ref: ModelReference) -> FieldViolation:
    return FieldViolation(
        ref.field,
        f"the {ref.kind} model {ref.name!r} is not registered",
        "MODEL_NOT_REGISTERED",
    )


def _require_id(model_id: str) -> None:
    if not model_id:
        raise InvalidArgument("the id is required", [FieldViolation("id", "the id is required")])


def _is_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def _page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            [FieldViolation("page_size", "page_size must not be negative")],
        )
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + last_id).encode()).decode()


def _decode_token(token: str) -> str | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX) or not _is_id(text.removeprefix(_TOKEN_PREFIX)):
        raise InvalidArgument(
            "page_token is not a token this service gave out",
            [FieldViolation("page_token", "page_token is not a token this service gave out")],
        )
    return text.removeprefix(_TOKEN_PREFIX)
