"""Tenants, keys and authentication through a real gateway on a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from comfyfleet.tenants.v1 import tenants_pb2
from services.gateway.config import Config
from tests.integration.gateway.conftest import Gw, bearer


async def create_tenant(gw: Gw, name: str) -> tenants_pb2.Tenant:
    request = tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name))
    return await gw.tenants.CreateTenant(request, metadata=gw.admin)


def mode(path: str) -> int:
    return Path(path).stat().st_mode & 0o777


async def test_bootstrap_key_file_is_private(gw: Gw, gateway_config: Config) -> None:
    assert mode(gateway_config.admin_key_file) == 0o600


async def test_admin_creates_tenant_and_key_shown_once(gw: Gw) -> None:
    tenant = await create_tenant(gw, "acme")
    created = await gw.tenants.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=gw.admin
    )
    assert created.secret.startswith("cfk_")
    listed = await gw.tenants.ListApiKeys(
        tenants_pb2.ListApiKeysRequest(tenant_id=tenant.id), metadata=gw.admin
    )
    assert [k.id for k in listed.api_keys] == [created.api_key.id]
    assert created.secret not in str(listed)


async def test_missing_and_bad_keys_are_unauthenticated(gw: Gw) -> None:
    request = tenants_pb2.ListTenantsRequest()
    for metadata in [(), bearer("cfk_nope"), (("x-api-key", "garbage"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.tenants.ListTenants(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tenant_key_without_admin_scope_is_denied(gw: Gw) -> None:
    tenant = await create_tenant(gw, "plain")
    created = await gw.tenants.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=gw.admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.tenants.ListTenants(
            tenants_pb2.ListTenantsRequest(), metadata=bearer(created.secret)
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_revoked_key_stops_working(gw: Gw) -> None:
    tenant = await create_tenant(gw, "revoked")
    created = await gw.tenants.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(
            tenant_id=tenant.id, api_key=tenants_pb2.ApiKey(scopes=["admin"])
        ),
        metadata=gw.admin,
    )
    await gw.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=bearer(created.secret))
    await gw.tenants.RevokeApiKey(
        tenants_pb2.RevokeApiKeyRequest(tenant_id=tenant.id, id=created.api_key.id),
        metadata=gw.admin,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.tenants.ListTenants(
            tenants_pb2.ListTenantsRequest(), metadata=bearer(created.secret)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_tenant_name_is_invalid_and_stores_nothing(gw: Gw) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_tenant(gw, "Not A Name!")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await gw.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=gw.admin)
    assert [t.name for t in listed.tenants] == ["default"]


async def test_duplicate_name_already_exists_and_request_id_is_idempotent(gw: Gw) -> None:
    request = tenants_pb2.CreateTenantRequest(
        tenant=tenants_pb2.Tenant(name="twice"), request_id="r-1"
    )
    first = await gw.tenants.CreateTenant(request, metadata=gw.admin)
    again = await gw.tenants.CreateTenant(request, metadata=gw.admin)
    assert again.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_tenant(gw, "twice")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_unknown_scope_is_invalid(gw: Gw) -> None:
    tenant = await create_tenant(gw, "scopes")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.tenants.CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(
                tenant_id=tenant.id, api_key=tenants_pb2.ApiKey(scopes=["root"])
            ),
            metadata=gw.admin,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
