"""JWT bearer tokens, verified against a JWKS file the operator configures.

Only RS256 and ES256 signatures are accepted, each only with a key of its own type, so a
token cannot choose a weaker algorithm ("none", HMAC with a public key as the secret). A token
must carry ``exp``; ``iss`` and ``aud`` are checked when configured. The JWKS file is read
again when it changes on disk, so keys rotate without a restart.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from comfyfleet.common.config import Settings, setting
from comfyfleet.common.errors import Unauthenticated

ALGORITHMS = frozenset({"RS256", "ES256"})
# Clock skew tolerated between the token's issuer and this gateway.
LEEWAY_S = 30.0


@dataclass(frozen=True)
class JwtSettings(Settings):
    """Read from ``COMFYFLEET_GATEWAY_JWKS_FILE``, ``_JWT_ISSUER`` and so on."""

    jwks_file: Path = setting("JWKS_FILE")
    issuer: str = setting("JWT_ISSUER", "")
    audience: str = setting("JWT_AUDIENCE", "")
    # The claim naming the tenant (its id or name) and the one listing scopes.
    tenant_claim: str = setting("JWT_TENANT_CLAIM", "comfyfleet_tenant")
    scope_claim: str = setting("JWT_SCOPE_CLAIM", "scope")
    # How often the file's modification time is looked at.
    reload_interval_s: float = 5.0


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says about its bearer."""

    subject: str
    tenant: str
    scopes: frozenset[str]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("cfk_")


def _invalid(why: str) -> Unauthenticated:
    return Unauthenticated(f"the bearer token is not valid: {why}", reason="INVALID_TOKEN")


def scopes_of(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    """OAuth 2's space-separated ``scope`` string, or a list (as in ``scp``)."""
    value = claims.get(claim, "")
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise _invalid(f"the {claim!r} claim is neither a string nor a list of strings")


class JwksVerifier:
    """Verifies tokens with the keys of ``settings.jwks_file``."""

    def __init__(self, settings: JwtSettings, *, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._mtime: float | None = None
        self._checked_at = float("-inf")
        self._load()

    def _load(self) -> None:
        """Reads the key set; a file that cannot be used keeps the keys read before."""
        path = self.settings.jwks_file
        mtime = os.stat(path).st_mtime
        document = json.loads(path.read_text())
        usable = [
            k
            for k in jwt.PyJWKSet.from_dict(document).keys
            if getattr(k, "algorithm_name", "") in ALGORITHMS
        ]
        if not usable:
            raise ValueError(f"{path} holds no RS256 or ES256 key")
        self._keys = {k.key_id: k for k in usable}
        self._mtime = mtime

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < self.settings.reload_interval_s:
            return
        self._checked_at = now
        try:
            if os.stat(self.settings.jwks_file).st_mtime != self._mtime:
                self._load()
        except (OSError, ValueError, jwt.exceptions.PyJWKSetError):
            # A half-written or deleted file during a rotation: keep verifying with the
            # keys we have rather than refusing every token.
            return

    def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as err:
            raise _invalid(str(err)) from None
        kid = header.get("kid")
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise _invalid(f"no key with kid {kid!r} in the configured key set")
        if header.get("alg") != key.algorithm_name:
            raise _invalid(
                f"the key {kid!r} signs with {key.algorithm_name}, not {header.get('alg')}"
            )
        return key

    def verify(self, token: str) -> TokenClaims:
        self._refresh()
        key = self._key_for(token)
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=s.audience or None,
                issuer=s.issuer or None,
                leeway=LEEWAY_S,
                options={"require": ["exp"], "verify_aud": bool(s.audience)},
            )
        except jwt.InvalidTokenError as err:
            raise _invalid(str(err)) from None
        tenant = claims.get(s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise _invalid(f"it has no {s.tenant_claim!r} claim naming a tenant")
        subject = claims.get("sub")
        issuer = claims.get("iss", "")
        return TokenClaims(
            subject=f"jwt:{issuer}:{subject if isinstance(subject, str) else ''}",
            tenant=tenant,
            scopes=scopes_of(claims, s.scope_claim),
        )
