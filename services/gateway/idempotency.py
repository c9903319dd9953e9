"""Idempotent creates: a ``request_id`` names one request, whichever service serves it.

The owning services already answer a repeated ``request_id`` with the first result. The
gateway adds the other half of AIP-155 for all of them at once: a ``request_id`` reused with
different parameters is refused, because the caller would otherwise get the first result for
a request it did not send. The ledger keeps a digest of each create request (without its
``request_id``) and the id of what it made, so a retry can also be answered by a read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
from google.protobuf import message

from comfyfleet.common.errors import FieldViolation, InvalidArgument

MAX_REQUEST_ID = 128
# The REST front forwards the `Idempotency-Key` header as this metadata key.
IDEMPOTENCY_KEY = "idempotency-key"
R = TypeVar("R")


def fingerprint(request: message.Message) -> bytes:
    """A digest of every field but ``request_id``; deterministic, so maps hash alike."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


def header_request_id(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    for key, value in metadata:
        if key == IDEMPOTENCY_KEY and isinstance(value, str):
            return value.strip()
    return ""


def fill_request_id(request: message.Message, metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """Sets an empty ``request_id`` from the Idempotency-Key header, and checks it.

    The two must agree when both are given: silently preferring one would hide a client bug.
    """
    given: str = request.request_id  # type: ignore[attr-defined]
    header = header_request_id(metadata)
    if header and given and header != given:
        raise _bad("differs from the Idempotency-Key header; send one of them")
    chosen = given or header
    if len(chosen) > MAX_REQUEST_ID:
        raise _bad(f"at most {MAX_REQUEST_ID} characters")
    if not chosen.isprintable():
        raise _bad("must be printable text, without control characters")
    request.request_id = chosen  # type: ignore[attr-defined]
    return chosen


def _bad(description: str) -> InvalidArgument:
    return InvalidArgument(f"request_id {description}", [FieldViolation("request_id", description)])


def reused() -> InvalidArgument:
    return InvalidArgument(
        "the request_id was already used for a different request",
        [FieldViolation("request_id", "already used with other parameters", "REUSED")],
        reason="REQUEST_ID_REUSED",
    )


@dataclass(frozen=True)
class Entry:
    fingerprint: bytes
    resource_id: str


class Ledger:
    """The gateway's table of create requests by (tenant, method, request_id)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def find(self, tenant: str, method: str, request_id: str) -> Entry | None:
        row = await self.pool.fetchrow(
            "SELECT fingerprint, resource_id FROM idempotency_keys"
            " WHERE tenant_id = $1 AND method = $2 AND request_id = $3",
            tenant,
            method,
            request_id,
        )
        return None if row is None else Entry(bytes(row["fingerprint"]), row["resource_id"])

    async def record(self, tenant: str, method: str, request_id: str, entry: Entry) -> Entry:
        """Stores ``entry`` unless one is there already; returns the one that is stored."""
        row = await self.pool.fetchrow(
            "INSERT INTO idempotency_keys (tenant_id, method, request_id, fingerprint, resource_id)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING fingerprint",
            tenant,
            method,
            request_id,
            entry.fingerprint,
            entry.resource_id,
        )
        if row is not None:
            return entry
        stored = await self.find(tenant, method, request_id)
        return stored or entry

    async def prune(self, older_than_s: float) -> int:
        """Forgets request ids older than the retention; a later reuse counts as new."""
        done = await self.pool.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
            older_than_s,
        )
        return int(done.split()[-1])

    async def once(
        self,
        key: tuple[str, str, str],
        request: message.Message,
        create: Callable[[], Awaitable[R]],
        resource_id: Callable[[R], str],
        replay: Callable[[str], Awaitable[R]] | None = None,
    ) -> R:
        """Runs ``create`` for a new request_id; refuses one reused with other parameters.

        ``key`` is (tenant, method, request_id). A retry of the same request is answered by
        ``replay(resource_id)`` when given, else by ``create`` again (the owning service
        returns its first result). Two racing different requests: the one whose entry is
        stored second is refused, after its service answered it with the first's result.
        """
        digest = fingerprint(request)
        prior = await self.find(*key)
        if prior is not None and prior.fingerprint != digest:
            raise reused()
        if prior is not None and replay is not None and prior.resource_id:
            return await replay(prior.resource_id)
        result = await create()
        stored = await self.record(*key, Entry(digest, resource_id(result)))
        if stored.fingerprint != digest:
            raise reused()
        return result
