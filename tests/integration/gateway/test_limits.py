"""Rate limits (per key, per tenant, platform default) and request size limits, end to end."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from comfyfleet.tenants.v1 import tenants_pb2
from services.gateway.config import Limits
from services.gateway.ratelimit import RateLimit
from tests.integration.gateway.conftest import Gw, Metadata, StartGateway

OWN = tenants_pb2.GetTenantRequest(id="-")


async def calls_until_refused(gw: Gw, key: Metadata, most: int = 50) -> tuple[int, float]:
    """How many calls passed before the first refusal, and the RetryInfo delay it carried."""
    for passed in range(most):
        try:
            await gw.tenants.GetTenant(OWN, metadata=key)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
            status = rpc_status.from_call(err)  # type: ignore[arg-type]
            assert status is not None
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status.details)
            return passed, retry.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError(f"{most} calls passed without a refusal")


async def test_a_keys_own_limit_refuses_with_retry_info_and_rest_429(gw: Gw) -> None:
    tenant = await gw.tenant("limited")
    slow = tenants_pb2.RateLimit(requests_per_second=0.2, burst=2)
    key = await gw.key(tenant.id, "executions:write", rate_limit=slow)
    passed, delay = await calls_until_refused(gw, key)
    assert passed == 2
    assert 0 < delay <= 5.0
    auth = {"Authorization": key[0][1]}
    async with (
        aiohttp.ClientSession(gw.rest_url) as http,
        http.get("/v1/tenants/-", headers=auth) as response,
    ):
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 5
        body = await response.json()
    assert body["code"] == code_pb2.RESOURCE_EXHAUSTED
    # Another key of the same tenant has its own bucket.
    other = await gw.key(tenant.id, "executions:write", rate_limit=slow)
    await gw.tenants.GetTenant(OWN, metadata=other)


async def test_the_tenants_limit_applies_to_its_keys_and_can_be_changed(gw: Gw) -> None:
    tenant = await gw.tenant(
        "tenant-limit", rate_limit=tenants_pb2.RateLimit(requests_per_second=0.1, burst=3)
    )
    assert tenant.rate_limit.burst == 3
    key = await gw.key(tenant.id)
    assert (await calls_until_refused(gw, key))[0] == 3
    update = tenants_pb2.UpdateTenantRequest(
        tenant=tenants_pb2.Tenant(
            id=tenant.id, rate_limit=tenants_pb2.RateLimit(requests_per_second=0.1, burst=6)
        )
    )
    updated = await gw.tenants.UpdateTenant(update, metadata=gw.admin)
    assert updated.rate_limit.burst == 6
    fresh = await gw.key(tenant.id)
    assert (await calls_until_refused(gw, fresh))[0] == 6


async def test_negative_limits_are_invalid(gw: Gw) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.tenant("bad-limits", rate_limit=tenants_pb2.RateLimit(requests_per_second=-1))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    tenant = await gw.tenant("bad-key-limits")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.key(tenant.id, rate_limit=tenants_pb2.RateLimit(burst=-2))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_platform_default_limits_keys_without_their_own(
    start_gateway: StartGateway,
) -> None:
    async with start_gateway(limits=Limits(rate=RateLimit(0.2, 4))) as gw:
        passed, _ = await calls_until_refused(gw, gw.admin)
    assert passed == 4


async def test_oversized_requests_are_refused_over_grpc_and_rest(
    start_gateway: StartGateway,
) -> None:
    limits = Limits(rate=RateLimit(0.0, 1), max_request_bytes=4096)
    async with start_gateway(limits=limits) as gw:
        big = tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name="x" * 5000))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.tenants.CreateTenant(big, metadata=gw.admin)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        auth = {"Authorization": gw.admin[0][1]}
        async with (
            aiohttp.ClientSession(gw.rest_url) as http,
            http.post("/v1/tenants", json={"name": "y" * 5000}, headers=auth) as response,
        ):
            assert response.status == 413
        listed = await gw.tenants.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=gw.admin)
        assert [t.name for t in listed.tenants] == ["default"]
