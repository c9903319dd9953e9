"""Who is calling, and whether they may call now.

Credentials come from ``authorization: Bearer`` or ``x-api-key`` metadata: an API key
(``cfk_...``), or a JWT when a JWKS file is configured. Every authenticated call then passes
the caller's rate limit, so no method can forget it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from comfyfleet.common import metrics
from comfyfleet.common.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from services.gateway import keys
from services.gateway.ratelimit import UNLIMITED, Gcra, RateLimit, choose
from services.gateway.tenants import ApiKeyRecord, Tenant, TenantStore
from services.gateway.tokens import JwksVerifier, looks_like_jwt

# The tenant id (or "-") a caller may use for its own tenant in tenant and key requests.
OWN_TENANT = "-"
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a key (or token subject) of a tenant, with its scopes."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    rate_limit: RateLimit = UNLIMITED
    max_concurrency: int = 0
    # The tenant's default environment ("" when it sets none).
    default_environment: str = ""

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def require(self, scope: str) -> None:
        if scope not in self.scopes and not self.admin:
            raise PermissionDenied(
                f"this API key lacks the {scope!r} scope", reason="MISSING_SCOPE"
            )

    def tenant(self, tenant_id: str, field: str = "tenant_id") -> str:
        """The tenant a request names, which must be the caller's own unless it is an admin.

        Another tenant is NOT_FOUND, as every other resource of another tenant is: the
        answer does not tell whether it exists.
        """
        if not tenant_id:
            raise InvalidArgument(
                f"{field} is required", [FieldViolation(field, f'a tenant id, or "{OWN_TENANT}"')]
            )
        if tenant_id == OWN_TENANT:
            return self.tenant_id
        if tenant_id != self.tenant_id and not self.admin:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return tenant_id


def presented_token(metadata: tuple[tuple[str, str | bytes], ...]) -> str | None:
    for key, value in metadata:
        if not isinstance(value, str):
            continue
        if key == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
        if key == "x-api-key":
            return value.strip()
    return None


class TtlCache(Generic[K, V]):
    """Rows read from the database, reused for ``ttl_s``: each call costs no query."""

    def __init__(self, ttl_s: float, *, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    async def get(self, key: K, load: Callable[[K], Awaitable[V]]) -> V:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = await load(key)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (now, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)


class Authenticator:
    """Checks credentials against the store, then the caller's rate limit.

    A revocation or a changed limit takes effect within ``cache_ttl_s``.
    """

    def __init__(
        self,
        store: TenantStore,
        *,
        cache_ttl_s: float = 5.0,
        limiter: Gcra | None = None,
        default_rate: RateLimit = UNLIMITED,
        tokens: JwksVerifier | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter or Gcra()
        self.default_rate = default_rate
        self.tokens = tokens
        self._keys: TtlCache[str, tuple[ApiKeyRecord, Tenant] | None] = TtlCache(cache_ttl_s)
        self._tenants: TtlCache[str, Tenant | None] = TtlCache(cache_ttl_s)

    async def authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        principal = await self.identify(tuple(context.invocation_metadata() or ()))
        try:
            self.limiter.check(
                principal.key_id, principal.rate_limit, f"api_key:{principal.key_id}"
            )
        except ResourceExhausted:
            metrics.rate_limited(principal.tenant_id)
            raise
        return principal

    async def identify(self, metadata: tuple[tuple[str, str | bytes], ...]) -> Principal:
        token = presented_token(metadata)
        if token is None:
            raise Unauthenticated(
                "no API key: send 'authorization: Bearer <key>'", reason="MISSING_CREDENTIALS"
            )
        if self.tokens is not None and looks_like_jwt(token):
            return await self._from_jwt(token)
        return await self._from_key(token)

    async def _from_key(self, token: str) -> Principal:
        parsed = keys.parse(token)
        found = await self._keys.get(parsed.key_id, self.store.credential) if parsed else None
        if parsed is None or found is None or not keys.matches(parsed, found[0].secret_sha256):
            raise Unauthenticated("the API key is not valid", reason="INVALID_API_KEY")
        record, tenant = found
        if record.revoked_at is not None:
            raise Unauthenticated("the API key was revoked", reason="API_KEY_REVOKED")
        return Principal(
            tenant.id,
            record.id,
            frozenset(record.scopes),
            self._rate(record, tenant),
            tenant.max_concurrency,
            tenant.default_environment,
        )

    async def _from_jwt(self, token: str) -> Principal:
        assert self.tokens is not None
        claims = self.tokens.verify(token)
        tenant = await self._tenants.get(claims.tenant, self.store.find_tenant_by_id_or_name)
        if tenant is None:
            raise Unauthenticated(
                f"the token's tenant {claims.tenant!r} does not exist", reason="UNKNOWN_TENANT"
            )
        return Principal(
            tenant.id,
            claims.subject,
            claims.scopes,
            self._rate(None, tenant),
            tenant.max_concurrency,
            tenant.default_environment,
        )

    def _rate(self, record: ApiKeyRecord | None, tenant: Tenant) -> RateLimit:
        levels = [(tenant.rate.per_second, tenant.rate.burst)]
        if record is not None:
            levels.insert(0, (record.rate.per_second, record.rate.burst))
        return choose(levels, self.default_rate)

    def forget(self, key_id: str) -> None:
        self._keys.forget(key_id)
