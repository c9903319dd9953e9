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

SCOPES = frozenset({"admin", "executions:write", "models:write", "webhooks:write", "keys:write"})
DEFAULT_SCOPES = ("executions:write", "models:write", "webhooks:write")
_TENANT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
MAX_RATE_PER_SECOND = 1e6
MAX_BURST = 1_000_000
MAX_CONCURRENCY = 100_000


@dataclass(frozen=True)
class Rate:
    """A stored rate limit; zero values take the next level's (see ratelimit.choose)."""

    per_second: float = 0.0
    burst: int = 0


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    max_concurrency: int
    created_at: datetime
    rate: Rate = Rate()
    # The environment of its executions that name none; "" takes the platform default.
    default_environment: str = ""


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant_id: str
    description: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    secret_sha256: bytes = field(default=b"", repr=False)
    rate: Rate = Rate()


def _tenant(row: asyncpg.Record, prefix: str = "") -> Tenant:
    return Tenant(
        row[prefix + "id"],
        row[prefix + "name"],
        row[prefix + "max_concurrency"],
        row[prefix + "created_at"],
        Rate(row[prefix + "rate_per_second"], row[prefix + "rate_burst"]),
        row[prefix + "default_environment"],
    )


def _key(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        row["id"],
        row["tenant_id"],
        row["description"],
        tuple(row["scopes"]),
        row["created_at"],
        row["revoked_at"],
        bytes(row["secret_sha256"]),
        Rate(row["rate_per_second"], row["rate_burst"]),
    )


def rate_violations(rate: Rate, field_name: str) -> list[FieldViolation]:
    out = []
    if not 0 <= rate.per_second <= MAX_RATE_PER_SECOND:  # NaN fails both comparisons
        out.append(
            FieldViolation(
                f"{field_name}.requests_per_second", f"must be from 0 to {MAX_RATE_PER_SECOND:g}"
            )
        )
    if not 0 <= rate.burst <= MAX_BURST:
        out.append(FieldViolation(f"{field_name}.burst", f"must be from 0 to {MAX_BURST}"))
    return out


def check_tenant(name: str, max_concurrency: int, rate: Rate = Rate()) -> None:
    violations = []
    if not _TENANT_NAME.match(name):
        violations.append(
            FieldViolation(
                "tenant.name",
                "must be 2-63 characters of lowercase letters, digits and dashes, "
                "starting with a letter",
            )
        )
    violations += limit_violations(max_concurrency, rate)
    if violations:
        raise InvalidArgument("the tenant is not valid", violations)


def limit_violations(max_concurrency: int, rate: Rate) -> list[FieldViolation]:
    out = rate_violations(rate, "tenant.rate_limit")
    if not 0 <= max_concurrency <= MAX_CONCURRENCY:
        out.append(FieldViolation("tenant.max_concurrency", f"must be from 0 to {MAX_CONCURRENCY}"))
    return out


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

    async def create_tenant(
        self, name: str, max_concurrency: int, request_id: str, rate: Rate = Rate()
    ) -> Tenant:
        check_tenant(name, max_concurrency, rate)
        async with self.pool.acquire() as conn:
            if request_id:
                row = await conn.fetchrow("SELECT * FROM tenants WHERE request_id = $1", request_id)
                if row is not None:
                    return _tenant(row)
            try:
                row = await conn.fetchrow(
                    "INSERT INTO tenants"
                    " (id, name, max_concurrency, request_id, rate_per_second, rate_burst)"
                    " VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6) RETURNING *",
                    new_id("ten"),
                    name,
                    max_concurrency,
                    request_id,
                    rate.per_second,
                    rate.burst,
                )
            except asyncpg.UniqueViolationError as err:
                raise AlreadyExists(f"a tenant named {name!r} exists") from err
        return _tenant(row)

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        max_concurrency: int | None,
        rate: Rate | None,
        default_environment: str | None = None,
    ) -> Tenant:
        """Sets the given limits and default environment (None keeps the stored value)."""
        current = await self.get_tenant(tenant_id)
        concurrency = current.max_concurrency if max_concurrency is None else max_concurrency
        chosen = current.rate if rate is None else rate
        violations = limit_violations(concurrency, chosen)
        if violations:
            raise InvalidArgument("the tenant's limits are not valid", violations)
        environment = (
            current.default_environment if default_environment is None else default_environment
        )
        row = await self.pool.fetchrow(
            "UPDATE tenants SET max_concurrency = $2, rate_per_second = $3, rate_burst = $4,"
            " default_environment = $5 WHERE id = $1 RETURNING *",
            tenant_id,
            concurrency,
            chosen.per_second,
            chosen.burst,
            environment,
        )
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return _tenant(row)

    async def get_tenant(self, tenant_id: str) -> Tenant:
        row = await self.pool.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return _tenant(row)

    async def find_tenant(self, name: str) -> Tenant | None:
        row = await self.pool.fetchrow("SELECT * FROM tenants WHERE name = $1", name)
        return None if row is None else _tenant(row)

    async def find_tenant_by_id_or_name(self, ref: str) -> Tenant | None:
        """A tenant by id or name (ids contain "_", which no name may)."""
        row = await self.pool.fetchrow("SELECT * FROM tenants WHERE id = $1 OR name = $1", ref)
        return None if row is None else _tenant(row)

    async def list_tenants(self, limit: int, after_name: str) -> list[Tenant]:
        rows = await self.pool.fetch(
            "SELECT * FROM tenants WHERE name > $1 ORDER BY name LIMIT $2", after_name, limit
        )
        return [_tenant(r) for r in rows]

    async def create_key(
        self,
        tenant_id: str,
        description: str,
        scopes: list[str],
        request_id: str,
        rate: Rate = Rate(),
    ) -> tuple[ApiKeyRecord, str | None]:
        """The new key and its token; a retried request_id returns the first key, no token."""
        chosen = check_scopes(scopes)
        violations = rate_violations(rate, "api_key.rate_limit")
        if violations:
            raise InvalidArgument("the API key's rate limit is not valid", violations)
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
                "INSERT INTO api_keys (id, tenant_id, secret_sha256, description, scopes,"
                " request_id, rate_per_second, rate_burst)"
                " VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, $8) RETURNING *",
                new.key_id,
                tenant_id,
                new.secret_sha256,
                description,
                list(chosen),
                request_id,
                rate.per_second,
                rate.burst,
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

    async def credential(self, key_id: str) -> tuple[ApiKeyRecord, Tenant] | None:
        """A key with its tenant, in one query: what authenticating a call needs."""
        row = await self.pool.fetchrow(
            "SELECT k.*, t.id AS t_id, t.name AS t_name, t.max_concurrency AS t_max_concurrency,"
            " t.created_at AS t_created_at, t.rate_per_second AS t_rate_per_second,"
            " t.rate_burst AS t_rate_burst, t.default_environment AS t_default_environment"
            " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1",
            key_id,
        )
        return None if row is None else (_key(row), _tenant(row, "t_"))
