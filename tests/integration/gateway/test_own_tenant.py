"""A tenant's keys manage that tenant's keys only; another tenant is NOT_FOUND to them."""

from __future__ import annotations

import grpc
import pytest

from comfyfleet.tenants.v1 import tenants_pb2
from tests.integration.gateway.conftest import Gw


async def expect(code: grpc.StatusCode, call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()


async def test_a_key_manager_creates_lists_and_revokes_its_own_keys(gw: Gw) -> None:
    tenant = await gw.tenant("own")
    manager = await gw.key(tenant.id, "keys:write", "executions:write")
    created = await gw.tenants.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(tenant_id="-", api_key=tenants_pb2.ApiKey()),
        metadata=manager,
    )
    assert created.api_key.tenant_id == tenant.id
    # The defaults, within what the creating key holds itself.
    assert list(created.api_key.scopes) == ["executions:write"]
    listed = await gw.tenants.ListApiKeys(
        tenants_pb2.ListApiKeysRequest(tenant_id=tenant.id), metadata=manager
    )
    assert created.api_key.id in [k.id for k in listed.api_keys]
    revoked = await gw.tenants.RevokeApiKey(
        tenants_pb2.RevokeApiKeyRequest(tenant_id="-", id=created.api_key.id), metadata=manager
    )
    assert revoked.HasField("revoke_time")
    own = await gw.tenants.GetTenant(tenants_pb2.GetTenantRequest(id="-"), metadata=manager)
    assert own.id == tenant.id


async def test_another_tenant_is_not_found_to_a_key_manager(gw: Gw) -> None:
    mine = await gw.tenant("mine")
    theirs = await gw.tenant("theirs")
    their_key = await gw.tenants.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(tenant_id=theirs.id), metadata=gw.admin
    )
    manager = await gw.key(mine.id, "keys:write")
    nf = grpc.StatusCode.NOT_FOUND
    await expect(
        nf, gw.tenants.GetTenant(tenants_pb2.GetTenantRequest(id=theirs.id), metadata=manager)
    )
    await expect(
        nf,
        gw.tenants.CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(tenant_id=theirs.id), metadata=manager
        ),
    )
    await expect(
        nf,
        gw.tenants.ListApiKeys(
            tenants_pb2.ListApiKeysRequest(tenant_id=theirs.id), metadata=manager
        ),
    )
    await expect(
        nf,
        gw.tenants.RevokeApiKey(
            tenants_pb2.RevokeApiKeyRequest(tenant_id=theirs.id, id=their_key.api_key.id),
            metadata=manager,
        ),
    )
    # Naming the other tenant's key under one's own tenant finds nothing either.
    await expect(
        nf,
        gw.tenants.RevokeApiKey(
            tenants_pb2.RevokeApiKeyRequest(tenant_id="-", id=their_key.api_key.id),
            metadata=manager,
        ),
    )
    still = await gw.tenants.ListApiKeys(
        tenants_pb2.ListApiKeysRequest(tenant_id=theirs.id), metadata=gw.admin
    )
    assert not still.api_keys[0].HasField("revoke_time")


async def test_no_key_grants_more_than_it_has_and_admin_calls_stay_admin(gw: Gw) -> None:
    tenant = await gw.tenant("escalate")
    manager = await gw.key(tenant.id, "keys:write")
    for scopes in (["admin"], ["models:write"]):
        await expect(
            grpc.StatusCode.PERMISSION_DENIED,
            gw.tenants.CreateApiKey(
                tenants_pb2.CreateApiKeyRequest(
                    tenant_id="-", api_key=tenants_pb2.ApiKey(scopes=scopes)
                ),
                metadata=manager,
            ),
        )
    denied = grpc.StatusCode.PERMISSION_DENIED
    await expect(denied, gw.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=manager))
    await expect(
        denied,
        gw.tenants.UpdateTenant(
            tenants_pb2.UpdateTenantRequest(
                tenant=tenants_pb2.Tenant(id=tenant.id, max_concurrency=9)
            ),
            metadata=manager,
        ),
    )
    plain = await gw.key(tenant.id, "executions:write")
    await expect(
        denied,
        gw.tenants.ListApiKeys(tenants_pb2.ListApiKeysRequest(tenant_id="-"), metadata=plain),
    )


async def test_admin_updates_a_tenants_concurrency_cap(gw: Gw) -> None:
    tenant = await gw.tenant("capped", max_concurrency=2)
    updated = await gw.tenants.UpdateTenant(
        tenants_pb2.UpdateTenantRequest(tenant=tenants_pb2.Tenant(id=tenant.id, max_concurrency=5)),
        metadata=gw.admin,
    )
    assert updated.max_concurrency == 5
    await expect(
        grpc.StatusCode.NOT_FOUND,
        gw.tenants.UpdateTenant(
            tenants_pb2.UpdateTenantRequest(
                tenant=tenants_pb2.Tenant(id="ten_nope", max_concurrency=1)
            ),
            metadata=gw.admin,
        ),
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        gw.tenants.UpdateTenant(
            tenants_pb2.UpdateTenantRequest(
                tenant=tenants_pb2.Tenant(id=tenant.id, max_concurrency=-1)
            ),
            metadata=gw.admin,
        ),
    )
