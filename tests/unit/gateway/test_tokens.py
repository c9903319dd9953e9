"""JWT bearer tokens against a JWKS file: accepted algorithms, claims, rotation, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from comfyfleet.common.errors import Unauthenticated
from services.gateway.tokens import JwksVerifier, JwtSettings, looks_like_jwt

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(private: Any, kid: str) -> dict[str, Any]:
    algo = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
    doc: dict[str, Any] = algo.to_jwk(private.public_key(), as_dict=True)
    doc["kid"] = kid
    return doc


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


def token(private: Any, kid: str | None, alg: str, **claims: Any) -> str:
    body = {"sub": "user-1", "comfyfleet_tenant": "acme", "exp": time.time() + 60, **claims}
    headers = {"kid": kid} if kid else {}
    return jwt.encode(body, private, algorithm=alg, headers=headers)


@pytest.fixture
def verifier(tmp_path: Path) -> JwksVerifier:
    path = write_jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "r1"), jwk(EC_KEY, "e1"))
    return JwksVerifier(JwtSettings(path, issuer="https://idp", audience="comfyfleet"))


def good(private: Any, kid: str, alg: str, **claims: Any) -> str:
    return token(private, kid, alg, **{"iss": "https://idp", "aud": "comfyfleet", **claims})


def test_rs256_and_es256_tokens_give_tenant_subject_and_scopes(verifier: JwksVerifier) -> None:
    rs = verifier.verify(good(RSA_KEY, "r1", "RS256", scope="executions:write models:write"))
    assert rs.tenant == "acme"
    assert rs.subject == "jwt:https://idp:user-1"
    assert rs.scopes == {"executions:write", "models:write"}
    es = verifier.verify(good(EC_KEY, "e1", "ES256", scope="webhooks:write"))
    assert es.scopes == {"webhooks:write"}


def test_scopes_as_a_list_are_read(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "r1"))
    verifier = JwksVerifier(JwtSettings(path, scope_claim="scp"))
    claims = verifier.verify(token(RSA_KEY, "r1", "RS256", scp=["admin"]))
    assert claims.scopes == {"admin"}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: good(RSA_KEY, "r1", "RS256", exp=time.time() - 120), id="expired"),
        pytest.param(lambda: token(RSA_KEY, "r1", "RS256", iss="https://idp"), id="no-audience"),
        pytest.param(lambda: good(RSA_KEY, "r1", "RS256", iss="https://evil"), id="wrong-issuer"),
        pytest.param(lambda: good(OTHER_RSA_KEY, "r1", "RS256"), id="wrong-signature"),
        pytest.param(lambda: good(OTHER_RSA_KEY, "r9", "RS256"), id="unknown-kid"),
        pytest.param(lambda: good(RSA_KEY, "r1", "RS512"), id="other-algorithm"),
        pytest.param(lambda: good(EC_KEY, "r1", "ES256"), id="algorithm-of-another-key-type"),
        pytest.param(lambda: good(RSA_KEY, "r1", "RS256", comfyfleet_tenant=""), id="no-tenant"),
        pytest.param(lambda: good(RSA_KEY, "r1", "RS256", scope=7), id="bad-scope-claim"),
        pytest.param(
            lambda: jwt.encode(
                {"comfyfleet_tenant": "acme", "iss": "https://idp", "aud": "comfyfleet"},
                RSA_KEY,
                algorithm="RS256",
                headers={"kid": "r1"},
            ),
            id="no-exp",
        ),
        pytest.param(lambda: "a.b.c", id="garbage"),
    ],
)
def test_bad_tokens_are_unauthenticated(verifier: JwksVerifier, make: Any) -> None:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(make())
    assert caught.value.reason == "INVALID_TOKEN"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_hmac_signed_with_the_public_key_is_refused(verifier: JwksVerifier) -> None:
    # The classic confusion: HS256 "signed" with the RSA public key as the shared secret.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": "r1", "typ": "JWT"}).encode())
    claims = {"comfyfleet_tenant": "acme", "exp": time.time() + 60}
    payload = b64(json.dumps({**claims, "iss": "https://idp", "aud": "comfyfleet"}).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    with pytest.raises(Unauthenticated):
        verifier.verify(f"{header}.{payload}.{signature}")


def test_a_rotated_key_file_is_picked_up(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "r1"))
    verifier = JwksVerifier(JwtSettings(path, reload_interval_s=0.0))
    with pytest.raises(Unauthenticated):
        verifier.verify(token(OTHER_RSA_KEY, "r2", "RS256"))
    write_jwks(path, jwk(RSA_KEY, "r1"), jwk(OTHER_RSA_KEY, "r2"))
    later = os.stat(path).st_mtime + 10
    os.utime(path, (later, later))
    assert verifier.verify(token(OTHER_RSA_KEY, "r2", "RS256")).tenant == "acme"


def test_a_broken_file_during_rotation_keeps_the_old_keys(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "r1"))
    verifier = JwksVerifier(JwtSettings(path, reload_interval_s=0.0))
    path.write_text("{half")
    later = os.stat(path).st_mtime + 10
    os.utime(path, (later, later))
    assert verifier.verify(token(RSA_KEY, "r1", "RS256")).tenant == "acme"


def test_a_file_without_usable_keys_is_refused_at_start(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", {"kty": "oct", "k": "c2VjcmV0", "kid": "h"})
    with pytest.raises(ValueError):
        JwksVerifier(JwtSettings(path))


def test_api_keys_are_not_taken_for_jwts() -> None:
    assert looks_like_jwt("x.y.z")
    assert not looks_like_jwt("cfk_" + "a" * 54)
