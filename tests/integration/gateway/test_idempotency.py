"""request_id and the Idempotency-Key header on the gateway's own creates (tenants, keys)."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info
from comfyfleet.tenants.v1 import tenants_pb2
from services.gateway.idempotency import Ledger
from tests.integration.gateway.conftest import Gw


def create(name: str, request_id: str, **fields: object) -> tenants_pb2.CreateTenantRequest:
    tenant = tenants_pb2.Tenant(name=name, **fields)  # type: ignore[arg-type]
    return tenants_pb2.CreateTenantRequest(tenant=tenant, request_id=request_id)


async def reused(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_info(status)
    assert info is not None and info.reason == "REQUEST_ID_REUSED"


async def names(gw: Gw) -> list[str]:
    listed = await gw.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=gw.admin)
    return [t.name for t in listed.tenants]


async def test_a_retry_returns_the_first_tenant_and_other_parameters_are_refused(gw: Gw) -> None:
    first = await gw.tenants.CreateTenant(create("idem", "r-1"), metadata=gw.admin)
    again = await gw.tenants.CreateTenant(create("idem", "r-1"), metadata=gw.admin)
    assert again == first
    await reused(gw.tenants.CreateTenant(create("idem-other", "r-1"), metadata=gw.admin))
    await reused(
        gw.tenants.CreateTenant(create("idem", "r-1", max_concurrency=4), metadata=gw.admin)
    )
    assert await names(gw) == ["default", "idem"]


async def test_a_refused_create_leaves_its_request_id_free(gw: Gw) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await gw.tenants.CreateTenant(create("Bad Name", "r-2"), metadata=gw.admin)
    fixed = await gw.tenants.CreateTenant(create("good-name", "r-2"), metadata=gw.admin)
    assert fixed.name == "good-name"


async def test_api_key_retry_returns_the_same_key_without_its_secret(gw: Gw) -> None:
    tenant = await gw.tenant("keyed")
    request = tenants_pb2.CreateApiKeyRequest(
        tenant_id=tenant.id, api_key=tenants_pb2.ApiKey(description="ci"), request_id="k-1"
    )
    first = await gw.tenants.CreateApiKey(request, metadata=gw.admin)
    again = await gw.tenants.CreateApiKey(request, metadata=gw.admin)
    assert again.api_key.id == first.api_key.id
    assert first.secret and not again.secret
    request.api_key.description = "something else"
    await reused(gw.tenants.CreateApiKey(request, metadata=gw.admin))


async def test_idempotency_key_header_over_rest(gw: Gw) -> None:
    headers = {"Authorization": gw.admin[0][1], "Idempotency-Key": "rest-1"}
    async with aiohttp.ClientSession(gw.rest_url, headers=headers) as http:
        async with http.post("/v1/tenants", json={"name": "via-rest"}) as response:
            assert response.status == 200, await response.text()
            first = await response.json()
        async with http.post("/v1/tenants", json={"name": "via-rest"}) as response:
            assert response.status == 200
            assert (await response.json())["id"] == first["id"]
        async with http.post("/v1/tenants", json={"name": "via-rest-2"}) as response:
            assert response.status == 400
            body = await response.json()
        assert body["details"][0]["reason"] == "REQUEST_ID_REUSED"
    assert await names(gw) == ["default", "via-rest"]


async def test_the_same_request_id_in_two_tenants_is_two_requests(gw: Gw) -> None:
    a = await gw.tenant("ta")
    b = await gw.tenant("tb")
    key_a = await gw.key(a.id, "keys:write", "executions:write")
    key_b = await gw.key(b.id, "keys:write", "executions:write")
    request = tenants_pb2.CreateApiKeyRequest(tenant_id="-", request_id="shared")
    made_a = await gw.tenants.CreateApiKey(request, metadata=key_a)
    made_b = await gw.tenants.CreateApiKey(request, metadata=key_b)
    assert made_a.api_key.tenant_id == a.id and made_b.api_key.tenant_id == b.id


async def test_request_ids_older_than_the_retention_are_forgotten(gw: Gw) -> None:
    ledger = Ledger(gw.gateway.store.pool)
    first = await gw.tenants.CreateTenant(create("old", "r-old"), metadata=gw.admin)
    admin_tenant = (
        await gw.tenants.GetTenant(tenants_pb2.GetTenantRequest(id="-"), metadata=gw.admin)
    ).id
    assert await ledger.prune(3600.0) == 0
    entry = await ledger.find(admin_tenant, "CreateTenant", "r-old")
    assert entry is not None and entry.resource_id == first.id
    assert await ledger.prune(0.0) == 1
    assert await ledger.find(admin_tenant, "CreateTenant", "r-old") is None
