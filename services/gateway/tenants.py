"""Tenants and API keys, stored in the gateway's own schema."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from comfyfleet.common.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from comfyfleet.common.ids import new_id
from services.gateway import keys

SCOPES = frozenset({"admin", "executions:write", "models:write", "webhooks:write"})
DEFAULT_SCOPES = ("executions:write", "models:write", "webhooks:write")
_TENANT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    max_concurrency: int
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant_id: str
    description: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    secret_sha256: bytes = field(default=b"", repr=False)


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(row["id"], row["name"], row["max_concurrency"], row["created_at"])


def _key(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        row["id"],
        row["tenant_id"],
        row["description"],
        tuple(row["scopes"]),
        row["created_at"],
        row["revoked_at"],
        bytes(row["secret_sha256"]),
    )


def check_tenant(name: str, max_concurrency: int) -> None:
    violations = []
    if not _TENANT_NAME.match(name):
        violations.append(
            FieldViolation(
                "tenant.name",
                "must be 2-63 characters of lowercase letters, digits and dashes, "
                "starting with a letter",
            )
        )
    if max_concurrency < 0:
        violations.append(FieldViolation("tenant.max_concurrency", "must not be negative"))
    if violations:
        raise InvalidArgument("the tenant is not valid", violations)


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise InvalidArgument(
            "unknown scopes",
            [
                FieldViolation("api_key.scopes", f"unknown scope {s!r}; known: {sorted(SCOPES)}")
                for s in unknown
            ],
        )
    return tuple(dict.fromkeys(scopes)) if scopes else DEFAULT_SCOPES


class TenantStore:
    """Tenant and key rows; every method is one short transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_tenant(self, name: str, max_concurrency: int, request_id: str) -> Tenant:
        check_tenant(name, max_concurrency)
        async with self.pool.acquire() as conn:
            if request_id:
                row = await conn.fetchrow("SELECT * FROM tenants WHERE request_id = $1", request_id)
                if row is not None:
                    return _tenant(row)
            try:
                row = await conn.fetchrow(
                    "INSERT INTO tenants (id, name, max_concurrency, request_id)"
                    " VALUES ($1, $2, $3, NULLIF($4, '')) RETURNING *",
                    new_id("ten"),
                    name,
                    max_concurrency,
                    request_id,
                )
            except asyncpg.UniqueViolationError as err:
                raise AlreadyExists(f"a tenant named {name!r} exists") from err
        return _tenant(row)

    async def get_tenant(self, tenant_id: str) -> Tenant:
        row = await self.pool.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return _tenant(row)

    async def find_tenant(self, name: str) -> Tenant | None:
        row = await self.pool.fetchrow("SELECT * FROM tenants WHERE name = $1", name)
        return None if row is None else _tenant(row)

    async def list_tenants(self, limit: int, after_name: str) -> list[Tenant]:
        rows = await self.pool.fetch(
            "SELECT * FROM tenants WHERE name > $1 ORDER BY name LIMIT $2", after_name, limit
        )
        return [_tenant(r) for r in rows]

    async def create_key(
        self, tenant_id: str, description: str, scopes: list[str], request_id: str
    ) -> tuple[ApiKeyRecord, str | None]:
        """The new key and its token; a retried request_id returns the first key, no token."""
        chosen = check_scopes(scopes)
        await self.get_tenant(tenant_id)
        async with self.pool.acquire() as conn:
            if request_id:
                row = await conn.fetchrow(
                    "SELECT * FROM api_keys WHERE tenant_id = $1 AND request_id = $2",
                    tenant_id,
                    request_id,
                )
                if row is not None:
                    return _key(row), None
            new = keys.generate()
            row = await conn.fetchrow(
                "INSERT INTO api_keys (id, tenant_id, secret_sha256, description, scopes, request_id)"
                " VALUES ($1, $2, $3, $4, $5, NULLIF($6, '')) RETURNING *",
                new.key_id,
                tenant_id,
                new.secret_sha256,
                description,
                list(chosen),
                request_id,
            )
        return _key(row), new.token

    async def list_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        await self.get_tenant(tenant_id)
        rows = await self.pool.fetch(
            "SELECT * FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC", tenant_id
        )
        return [_key(r) for r in rows]

    async def revoke_key(self, tenant_id: str, key_id: str) -> ApiKeyRecord:
        row = await self.pool.fetchrow(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE tenant_id = $1 AND id = $2 RETURNING *",
            tenant_id,
            key_id,
        )
        if row is None:
            raise NotFound(f"API key {key_id!r} not found")
        return _key(row)

    async def key(self, key_id: str) -> ApiKeyRecord | None:
        row = await self.pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
        return None if row is None else _key(row)
