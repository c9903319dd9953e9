"""Tenants, keys and authentication through a real gateway on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from comfyfleet.common.config import DatabaseConfig
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from services.gateway.config import Config
from services.gateway.server import build_gateway

UNREACHABLE = "127.0.0.1:9"


@dataclass
class Gw:
    stub: tenants_pb2_grpc.TenantServiceStub
    admin: tuple[tuple[str, str], ...]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def gw(fresh_database: str, tmp_path: Path) -> AsyncIterator[Gw]:
    key_file = tmp_path / "admin.key"
    cfg = Config(
        grpc_addr="127.0.0.1:0",
        rest_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        scheduler_addr=UNREACHABLE,
        models_addr=UNREACHABLE,
        webhook_addr=UNREACHABLE,
        admin_key_file=str(key_file),
        bootstrap_tenant="default",
        key_cache_ttl_s=0.0,
        shutdown_grace_s=1.0,
    )
    async with build_gateway(cfg) as gateway:
        assert key_file.stat().st_mode & 0o777 == 0o600
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            yield Gw(
                tenants_pb2_grpc.TenantServiceStub(channel), bearer(key_file.read_text().strip())
            )


async def create_tenant(gw: Gw, name: str) -> tenants_pb2.Tenant:
    request = tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name))
    return await gw.stub.CreateTenant(request, metadata=gw.admin)


async def test_admin_creates_tenant_and_key_shown_once(gw: Gw) -> None:
    tenant = await create_tenant(gw, "acme")
    created = await gw.stub.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=gw.admin
    )
    assert created.secret.startswith("cfk_")
    listed = await gw.stub.ListApiKeys(
        tenants_pb2.ListApiKeysRequest(tenant_id=tenant.id), metadata=gw.admin
    )
    assert [k.id for k in listed.api_keys] == [created.api_key.id]
    assert created.secret not in str(listed)


async def test_missing_and_bad_keys_are_unauthenticated(gw: Gw) -> None:
    request = tenants_pb2.ListTenantsRequest()
    for metadata in [(), bearer("cfk_nope"), (("x-api-key", "garbage"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.ListTenants(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tenant_key_without_admin_scope_is_denied(gw: Gw) -> None:
    tenant = await create_tenant(gw, "plain")
    created = await gw.stub.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=gw.admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=bearer(created.secret))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_revoked_key_stops_working(gw: Gw) -> None:
    tenant = await create_tenant(gw, "revoked")
    created = await gw.stub.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(
            tenant_id=tenant.id, api_key=tenants_pb2.ApiKey(scopes=["admin"])
        ),
        metadata=gw.admin,
    )
    await gw.stub.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=bearer(created.secret))
    await gw.stub.RevokeApiKey(
        tenants_pb2.RevokeApiKeyRequest(tenant_id=tenant.id, id=created.api_key.id),
        metadata=gw.admin,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=bearer(created.secret))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_tenant_name_is_invalid_and_stores_nothing(gw: Gw) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_tenant(gw, "Not A Name!")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await gw.stub.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=gw.admin)
    assert [t.name for t in listed.tenants] == ["default"]


async def test_duplicate_name_already_exists_and_request_id_is_idempotent(gw: Gw) -> None:
    request = tenants_pb2.CreateTenantRequest(
        tenant=tenants_pb2.Tenant(name="twice"), request_id="r-1"
    )
    first = await gw.stub.CreateTenant(request, metadata=gw.admin)
    again = await gw.stub.CreateTenant(request, metadata=gw.admin)
    assert again.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_tenant(gw, "twice")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_unknown_scope_is_invalid(gw: Gw) -> None:
    tenant = await create_tenant(gw, "scopes")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(
                tenant_id=tenant.id, api_key=tenants_pb2.ApiKey(scopes=["root"])
            ),
            metadata=gw.admin,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
