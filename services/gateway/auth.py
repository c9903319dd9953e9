"""Who is calling: API keys from ``authorization: Bearer`` or ``x-api-key`` metadata."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

from comfyfleet.common.errors import PermissionDenied, Unauthenticated
from services.gateway import keys
from services.gateway.tenants import ApiKeyRecord, TenantStore


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a key of a tenant, with its scopes."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise PermissionDenied(
                f"this API key lacks the {scope!r} scope", reason="MISSING_SCOPE"
            )


def presented_token(metadata: tuple[tuple[str, str | bytes], ...]) -> str | None:
    for key, value in metadata:
        if not isinstance(value, str):
            continue
        if key == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
        if key == "x-api-key":
            return value.strip()
    return None


class Authenticator:
    """Checks keys against the store, caching rows briefly so each call costs no query.

    A revocation takes effect within ``cache_ttl_s``.
    """

    def __init__(self, store: TenantStore, *, cache_ttl_s: float = 5.0) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.cache_ttl_s:
            return hit[1]
        record = await self.store.key(key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record

    async def authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        token = presented_token(tuple(context.invocation_metadata() or ()))
        if token is None:
            raise Unauthenticated(
                "no API key: send 'authorization: Bearer <key>'", reason="MISSING_CREDENTIALS"
            )
        parsed = keys.parse(token)
        record = await self._record(parsed.key_id) if parsed else None
        if parsed is None or record is None or not keys.matches(parsed, record.secret_sha256):
            raise Unauthenticated("the API key is not valid", reason="INVALID_API_KEY")
        if record.revoked_at is not None:
            raise Unauthenticated("the API key was revoked", reason="API_KEY_REVOKED")
        return Principal(record.tenant_id, record.id, frozenset(record.scopes))

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)
