"""JWT bearer tokens through a real gateway: the tenant and scopes come from the claims."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from comfyfleet.tenants.v1 import tenants_pb2
from services.gateway.tokens import JwtSettings
from tests.integration.gateway.conftest import StartGateway, bearer

KEY = ec.generate_private_key(ec.SECP256R1())
ISSUER = "https://idp.example"


def write_jwks(path: Path) -> Path:
    doc: dict[str, Any] = ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    path.write_text(json.dumps({"keys": [{**doc, "kid": "k1"}]}))
    return path


def token(tenant: str, scope: str = "", **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": "comfyfleet",
        "sub": "alice",
        "exp": time.time() + 300,
        "comfyfleet_tenant": tenant,
        "scope": scope,
        **claims,
    }
    return jwt.encode(body, KEY, algorithm="ES256", headers={"kid": "k1"})


async def test_tokens_map_claims_to_tenant_and_scopes(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    settings = JwtSettings(write_jwks(tmp_path / "jwks.json"), ISSUER, "comfyfleet")
    async with start_gateway(jwt=settings) as gw:
        tenant = await gw.tenant("jwt-tenant")
        own = tenants_pb2.GetTenantRequest(id="-")
        # By name or by id.
        for ref in ("jwt-tenant", tenant.id):
            got = await gw.tenants.GetTenant(own, metadata=bearer(token(ref)))
            assert got.id == tenant.id
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.tenants.ListTenants(
                tenants_pb2.ListTenantsRequest(), metadata=bearer(token("jwt-tenant"))
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        admin = bearer(token("jwt-tenant", "admin"))
        await gw.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=admin)
        headers = {"Authorization": f"Bearer {token('jwt-tenant')}"}
        async with (
            aiohttp.ClientSession(gw.rest_url) as http,
            http.get("/v1/tenants/-", headers=headers) as response,
        ):
            assert response.status == 200
            assert (await response.json())["id"] == tenant.id
        # API keys keep working beside tokens.
        await gw.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=gw.admin)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"comfyfleet_tenant": "no-such-tenant"}, id="unknown-tenant"),
        pytest.param({"aud": "someone-else"}, id="wrong-audience"),
        pytest.param({"exp": time.time() - 3600}, id="expired"),
    ],
)
async def test_bad_tokens_are_unauthenticated(
    start_gateway: StartGateway, tmp_path: Path, claims: dict[str, Any]
) -> None:
    settings = JwtSettings(write_jwks(tmp_path / "jwks.json"), ISSUER, "comfyfleet")
    async with start_gateway(jwt=settings) as gw:
        await gw.tenant("known")
        bad = token("known", **claims)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.tenants.GetTenant(tenants_pb2.GetTenantRequest(id="-"), metadata=bearer(bad))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_without_a_jwks_file_tokens_are_not_accepted(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        await gw.tenant("nojwt")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.tenants.GetTenant(
                tenants_pb2.GetTenantRequest(id="-"), metadata=bearer(token("nojwt"))
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
