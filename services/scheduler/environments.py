"""Environments in PostgreSQL: declared by admins or by the first executor of one that
registers, each with the node catalog its executors last reported.

A catalog is the engine's ``GET /object_info`` (a real ComfyUI's is 1-3 MB): executors send
it with every registration, and it is parsed and written only when its digest differs from
the recorded one. Submissions read the parsed catalog from a per-replica cache keyed by that
digest.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf import json_format

from comfyfleet.common.environments import (
    NATIVE,
    catalog_digest,
    check_name,
    environment_of,
    name_problem,
    object_info_text,
    spec_of,
    spec_violations,
)
from comfyfleet.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from comfyfleet.common.timeutil import to_timestamp
from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.objectinfo import ObjectInfoError, catalog_from_object_info
from comfyfleet.workflow.specs import NodeCatalog
from services.scheduler.store import NOT_TERMINAL

log = logging.getLogger(__name__)

NOT_FOUND = "ENVIRONMENT_NOT_FOUND"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_REQUEST_ID = 128

_COLUMNS = (
    "e.name, e.engine, e.spec, e.catalog_digest, e.node_type_count, e.catalog_updated_at,"
    " e.request_id, e.created_at"
)

# With the executors of the environment whose registration has not lapsed.
_SELECT = f"""
SELECT {_COLUMNS}, (SELECT count(*) FROM executors x WHERE x.environment = e.name
                    AND x.last_seen > now() - make_interval(secs => $1)) AS executor_count
FROM environments e
"""

_DECLARE = """
INSERT INTO environments (name, engine, spec, request_id) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""

_RECORD_CATALOG = """
UPDATE environments SET catalog = $2, catalog_digest = $3, node_type_count = $4,
    catalog_updated_at = now()
WHERE name = $1 AND catalog_digest IS DISTINCT FROM $3
"""


@dataclass(frozen=True)
class EnvironmentRecord:
    """One row of ``environments``, with its live executors counted."""

    name: str
    engine: str
    spec: dict[str, Any]
    # "" while no catalog is known.
    catalog_digest: str
    node_type_count: int
    catalog_updated_at: datetime | None
    request_id: str | None
    created_at: datetime
    executor_count: int = 0

    @property
    def known(self) -> bool:
        return bool(self.catalog_digest)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> EnvironmentRecord:
        return cls(
            name=row["name"],
            engine=row["engine"],
            spec=json.loads(row["spec"]),
            catalog_digest=row["catalog_digest"] or "",
            node_type_count=row["node_type_count"],
            catalog_updated_at=row["catalog_updated_at"],
            request_id=row["request_id"],
            created_at=row["created_at"],
            executor_count=row.get("executor_count") or 0,
        )

    def pending(self) -> FailedPrecondition:
        return FailedPrecondition(
            f"the node catalog of environment {self.name!r} is not known yet: no executor of"
            " it has registered; start one (or scale its pool up) and try again",
            reason="ENVIRONMENT_CATALOG_PENDING",
            metadata={"environment": self.name},
        )


@dataclass(frozen=True)
class Catalog:
    """An environment's catalog as an executor reported it."""

    name: str
    object_info_json: str
    digest: str
    updated_at: datetime


@dataclass(frozen=True)
class IncomingCatalog:
    """A catalog an executor sent that differs from the recorded one, checked."""

    text: str
    digest: str
    node_type_count: int


def parse_catalog(text: str, field: str = "object_info_json") -> IncomingCatalog:
    """A catalog's text checked to be ``GET /object_info``'s shape (every node type one
    ComfyUI would describe); INVALID_ARGUMENT naming ``field`` otherwise."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise _bad_catalog(field, f"not valid JSON: {err}") from None
    try:
        catalog = catalog_from_object_info(doc)
    except (ObjectInfoError, ValueError) as err:
        raise _bad_catalog(field, str(err)) from None
    return IncomingCatalog(text, catalog_digest(text), len(catalog))


def _bad_catalog(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"the node catalog is invalid: {description}",
        [FieldViolation(field, description)],
        reason="INVALID_CATALOG",
    )


def native_catalog() -> IncomingCatalog:
    """The native engine's catalog, as its executors send it."""
    return parse_catalog(object_info_text(NATIVE_CATALOG.object_info()))


class Environments:
    """Reads and changes environments; ``lapse_s`` is when an executor no longer counts."""

    def __init__(self, pool: asyncpg.Pool, lapse_s: float) -> None:
        self.pool = pool
        self.lapse_s = lapse_s
        # Parsed catalogs and built catalog messages by digest: each is parsed once per
        # replica, however many submissions read it.
        self._parsed: dict[str, NodeCatalog] = {}
        self._messages: dict[str, environments_pb2.EnvironmentCatalog] = {}

    async def seed_native(self) -> None:
        """Records the native catalog when no native executor has yet: the platform knows
        it without one, so native workflows validate before any executor starts."""
        catalog = native_catalog()
        await self.pool.execute(
            "UPDATE environments SET catalog = $2, catalog_digest = $3, node_type_count = $4,"
            " catalog_updated_at = now() WHERE name = $1 AND catalog IS NULL",
            NATIVE,
            catalog.text,
            catalog.digest,
            catalog.node_type_count,
        )

    # ---- reading ---------------------------------------------------------------------------

    async def get(self, name: str, field: str = "name") -> EnvironmentRecord:
        check_name(name, field)
        row = await self.pool.fetchrow(f"{_SELECT} WHERE e.name = $2", self.lapse_s, name)
        if row is None:
            raise NotFound(
                f"environment {name!r} does not exist",
                reason=NOT_FOUND,
                metadata={"environment": name},
            )
        return EnvironmentRecord.from_row(row)

    async def pending(self, name: str) -> bool:
        """Whether the environment's catalog is unknown (or the environment itself)."""
        digest = await self.pool.fetchval(
            "SELECT coalesce(catalog_digest, '') FROM environments WHERE name = $1", name
        )
        return not digest

    async def page(self, page_size: int, page_token: str) -> tuple[list[EnvironmentRecord], str]:
        """A page of environments by name, and the token of the next page ("" at the end)."""
        if page_size < 0:
            raise InvalidArgument(
                "page_size cannot be negative", [FieldViolation("page_size", "must be >= 0")]
            )
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token)
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE ($2::text IS NULL OR e.name > $2) ORDER BY e.name LIMIT $3",
            self.lapse_s,
            after,
            limit + 1,
        )
        records = [EnvironmentRecord.from_row(r) for r in rows[:limit]]
        token = _encode_token(records[-1].name) if len(rows) > limit else ""
        return records, token

    async def catalog(
        self, name: str, view: int = environments_pb2.CATALOG_VIEW_UNSPECIFIED
    ) -> environments_pb2.EnvironmentCatalog:
        """The environment's catalog message, as a Struct or (CATALOG_VIEW_JSON) the exact
        text recorded; NOT_FOUND for an unknown environment, FAILED_PRECONDITION while its
        catalog is not known."""
        if view not in environments_pb2.CatalogView.values():
            raise InvalidArgument(
                "unknown catalog view", [FieldViolation("view", "not a CatalogView")]
            )
        record = await self.get(name)
        if not record.known:
            raise record.pending()
        as_json = view == environments_pb2.CATALOG_VIEW_JSON
        cached = self._messages.get(record.catalog_digest)
        if not as_json and cached is not None and cached.name == name:
            return cached
        stored = await self._stored(name)
        if stored is None:  # deleted since
            return await self.catalog(name, view)
        message = environments_pb2.EnvironmentCatalog(
            name=name, digest=stored.digest, update_time=to_timestamp(stored.updated_at)
        )
        if as_json:
            message.object_info_json = stored.object_info_json
            return message
        json_format.Parse(stored.object_info_json, message.object_info)
        # The newest one only: they are large, and the gateway asks again only on a change.
        self._messages = {stored.digest: message}
        return message

    async def for_submission(self, name: str) -> tuple[EnvironmentRecord, NodeCatalog]:
        """The environment an execution names and its node catalog: INVALID_ARGUMENT (field
        ``environment``) when it does not exist, FAILED_PRECONDITION while its catalog is not
        known."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM environments e WHERE e.name = $1", name
        )
        if row is None:
            raise InvalidArgument(
                f"environment {name!r} does not exist",
                [FieldViolation("environment", "no environment has this name", NOT_FOUND)],
                reason=NOT_FOUND,
                metadata={"environment": name},
            )
        record = EnvironmentRecord.from_row(row)
        if not record.known:
            raise record.pending()
        parsed = self._parsed.get(record.catalog_digest)
        if parsed is None:
            stored = await self._stored(name)
            if stored is None:
                return await self.for_submission(name)
            parsed = self._node_catalog(stored)
        return record, parsed

    async def _stored(self, name: str) -> Catalog | None:
        row = await self.pool.fetchrow(
            "SELECT catalog, catalog_digest, catalog_updated_at FROM environments"
            " WHERE name = $1 AND catalog IS NOT NULL",
            name,
        )
        if row is None:
            return None
        return Catalog(name, row["catalog"], row["catalog_digest"], row["catalog_updated_at"])

    def _node_catalog(self, stored: Catalog) -> NodeCatalog:
        parsed = self._parsed.get(stored.digest)
        if parsed is None:
            parsed = catalog_from_object_info(json.loads(stored.object_info_json))
            # A replica serves a handful of environments; the cache is bounded all the same.
            if len(self._parsed) >= 16:
                self._parsed.clear()
            self._parsed[stored.digest] = parsed
        return parsed

    # ---- declaring and deleting ------------------------------------------------------------

    async def create(self, env: environments_pb2.Environment, request_id: str) -> EnvironmentRecord:
        """Declares an environment. A retry with the same ``request_id``, or a declaration
        with the spec the environment already has, returns it; another spec under a taken
        name is ALREADY_EXISTS."""
        check_declaration(env, request_id)
        spec = spec_of(env)
        if request_id:
            found = await self._by_request_id(request_id)
            if found is not None:
                return await self._replay(found, env.name, spec, request_id)
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                _DECLARE, env.name, env.engine, json.dumps(spec), request_id or None
            )
        if status == "INSERT 0 0":  # the name or the request_id was taken meanwhile
            by_key = await self._by_request_id(request_id) if request_id else None
            found = by_key or await self.get(env.name)
            return await self._replay(found, env.name, spec, request_id)
        log.info("environment %s declared (engine %s)", env.name, env.engine)
        return await self.get(env.name)

    async def _by_request_id(self, request_id: str) -> EnvironmentRecord | None:
        row = await self.pool.fetchrow(
            f"{_SELECT} WHERE e.request_id = $2", self.lapse_s, request_id
        )
        return EnvironmentRecord.from_row(row) if row else None

    async def _replay(
        self, found: EnvironmentRecord, name: str, spec: dict[str, Any], request_id: str
    ) -> EnvironmentRecord:
        if request_id and found.request_id == request_id and found.name != name:
            raise InvalidArgument(
                "the request_id was already used for a different request",
                [FieldViolation("request_id", "already used with other parameters", "REUSED")],
                reason="REQUEST_ID_REUSED",
            )
        if found.spec != spec:
            raise AlreadyExists(
                f"environment {name!r} already exists with another spec",
                reason="ENVIRONMENT_EXISTS",
                metadata={"environment": name},
            )
        return found

    async def delete(self, name: str) -> None:
        """Deletes an environment no queued or running execution uses. The row lock keeps a
        submission from slipping in between the check and the delete (submissions take a
        share lock on the row in their insert's transaction)."""
        check_name(name)
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT name FROM environments WHERE name = $1 FOR UPDATE", name
            )
            if found is None:
                raise NotFound(
                    f"environment {name!r} does not exist",
                    reason=NOT_FOUND,
                    metadata={"environment": name},
                )
            busy = await conn.fetchval(
                f"SELECT count(*) FROM executions WHERE environment = $1"
                f" AND state IN {NOT_TERMINAL}",
                name,
            )
            if busy:
                raise FailedPrecondition(
                    f"environment {name!r} has {busy} queued or running executions;"
                    " delete it once they have ended",
                    reason="ENVIRONMENT_IN_USE",
                    metadata={"environment": name, "executions": str(busy)},
                )
            await conn.execute("DELETE FROM environments WHERE name = $1", name)
        log.info("environment %s deleted", name)

    # ---- what registrations bring ----------------------------------------------------------

    async def incoming_catalog(self, name: str, text: str) -> IncomingCatalog | None:
        """The catalog an executor sent, checked, when it differs from the recorded one;
        None when it sent none or the same (compared by digest, without parsing)."""
        if not text:
            return None
        recorded = await self.pool.fetchval(
            "SELECT catalog_digest FROM environments WHERE name = $1", name
        )
        if recorded is not None and recorded == catalog_digest(text):
            return None
        return parse_catalog(text)

    @staticmethod
    async def declare(
        conn: asyncpg.Connection, env: environments_pb2.Environment, field: str
    ) -> None:
        """Declares the environment an executor registers with unless it exists; an existing
        one keeps its spec, but must run the executor's engine."""
        await conn.execute(_DECLARE, env.name, env.engine, json.dumps(spec_of(env)), None)
        engine = await conn.fetchval("SELECT engine FROM environments WHERE name = $1", env.name)
        if engine != env.engine:
            raise FailedPrecondition(
                f"environment {env.name!r} runs the {engine} engine; this executor runs"
                f" {env.engine}",
                reason="ENVIRONMENT_ENGINE_MISMATCH",
                metadata={"environment": env.name, "field": field},
            )

    @staticmethod
    async def record_catalog(conn: asyncpg.Connection, name: str, catalog: IncomingCatalog) -> None:
        status = await conn.execute(
            _RECORD_CATALOG, name, catalog.text, catalog.digest, catalog.node_type_count
        )
        if status != "UPDATE 0":
            log.info(
                "environment %s: catalog of %d node types recorded (%s)",
                name,
                catalog.node_type_count,
                catalog.digest[:12],
            )


def check_declaration(env: environments_pb2.Environment, request_id: str) -> None:
    violations: list[FieldViolation] = []
    problem = name_problem(env.name)
    if problem:
        violations.append(FieldViolation("environment.name", problem))
    violations += spec_violations(env, "environment")
    if len(request_id) > MAX_REQUEST_ID:
        violations.append(FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters"))
    if violations:
        raise InvalidArgument("the environment is invalid", violations)


def environment_proto(record: EnvironmentRecord) -> environments_pb2.Environment:
    env = environment_of(record.name, record.spec)
    env.catalog_state = (
        environments_pb2.CATALOG_STATE_KNOWN
        if record.known
        else environments_pb2.CATALOG_STATE_PENDING
    )
    env.node_type_count = record.node_type_count
    env.catalog_digest = record.catalog_digest
    if record.catalog_updated_at is not None:
        env.catalog_update_time.FromDatetime(record.catalog_updated_at)
    env.executor_count = record.executor_count
    env.create_time.FromDatetime(record.created_at)
    return env


def _encode_token(last_name: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last_name}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> str | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    name = text.removeprefix("after:")
    if not text.startswith("after:") or name_problem(name):
        raise InvalidArgument(
            "the page_token is invalid", [FieldViolation("page_token", "not a token of this list")]
        )
    return name
