"""TenantService: tenants and keys live in the gateway's own schema.

Admin keys manage every tenant. Any other key sees its own tenant only, and manages that
tenant's keys with the "keys:write" scope, granting no scope it lacks itself: a key can never
make a key more powerful than itself.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import grpc

from comfyfleet.common.errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)
from comfyfleet.common.timeutil import to_timestamp
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from services.gateway.auth import Authenticator, Principal
from services.gateway.environments import EnvironmentCatalogs
from services.gateway.idempotency import Ledger
from services.gateway.servicer import forward, idempotent
from services.gateway.tenants import (
    DEFAULT_SCOPES,
    ApiKeyRecord,
    Rate,
    Tenant,
    TenantStore,
    check_scopes,
)

Context: TypeAlias = grpc.aio.ServicerContext
UPDATABLE = ("max_concurrency", "rate_limit", "default_environment")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def rate_of(limit: tenants_pb2.RateLimit) -> Rate:
    return Rate(limit.requests_per_second, limit.burst)


def granted_scopes(principal: Principal, requested: list[str]) -> list[str]:
    """The scopes a new key gets: what was asked (or the defaults), within the caller's own."""
    chosen = list(check_scopes(requested))
    if principal.admin:
        return chosen
    if not requested:
        return [s for s in DEFAULT_SCOPES if s in principal.scopes]
    beyond = sorted(set(chosen) - principal.scopes)
    if beyond:
        raise PermissionDenied(
            f"a key cannot grant scopes it lacks itself: {', '.join(beyond)}",
            reason="SCOPE_ESCALATION",
        )
    return chosen


def update_fields(request: tenants_pb2.UpdateTenantRequest) -> set[str]:
    """The fields an update changes: its mask, or every limit the tenant sets."""
    paths = set(request.update_mask.paths)
    unknown = sorted(paths - set(UPDATABLE))
    if unknown:
        raise InvalidArgument(
            "the update_mask names fields that cannot be changed",
            [
                FieldViolation("update_mask", f"{p!r}; changeable: {', '.join(UPDATABLE)}")
                for p in unknown
            ],
        )
    if paths:
        return paths
    t = request.tenant
    implied = {"max_concurrency"} if t.max_concurrency else set()
    implied |= {"default_environment"} if t.default_environment else set()
    return implied | ({"rate_limit"} if t.HasField("rate_limit") else set())


class TenantsServicer(tenants_pb2_grpc.TenantServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        ledger: Ledger,
        store: TenantStore,
        scheduler: scheduler_pb2_grpc.SchedulerServiceStub,
        environments: EnvironmentCatalogs,
    ) -> None:
        self.auth = auth
        self.ledger = ledger
        self.store = store
        # Budgets live with the scheduler, which refuses work once one is spent.
        self.scheduler = scheduler
        # So do environments: a tenant's default must name one that exists.
        self.environments = environments

    async def _admin(self, context: Context) -> Principal:
        principal = await self.auth.authenticate(context)
        principal.require("admin")
        return principal

    async def _key_manager(self, context: Context) -> Principal:
        principal = await self.auth.authenticate(context)
        principal.require("keys:write")
        return principal

    async def CreateTenant(
        self, request: tenants_pb2.CreateTenantRequest, context: Context
    ) -> tenants_pb2.Tenant:
        principal = await self._admin(context)

        async def create() -> tenants_pb2.Tenant:
            t = request.tenant
            made = await self.store.create_tenant(
                t.name, t.max_concurrency, request.request_id, rate_of(t.rate_limit)
            )
            return tenant_message(made)

        async def replay(tenant_id: str) -> tenants_pb2.Tenant:
            return tenant_message(await self.store.get_tenant(tenant_id))

        return await idempotent(
            self.ledger, principal, context, "CreateTenant", request, create, replay
        )

    async def GetTenant(
        self, request: tenants_pb2.GetTenantRequest, context: Context
    ) -> tenants_pb2.Tenant:
        principal = await self.auth.authenticate(context)
        return tenant_message(await self.store.get_tenant(principal.tenant(request.id, "id")))

    async def ListTenants(
        self, request: tenants_pb2.ListTenantsRequest, context: Context
    ) -> tenants_pb2.ListTenantsResponse:
        await self._admin(context)
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size cannot be negative", [FieldViolation("page_size", "must be >= 0")]
            )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        found = await self.store.list_tenants(size + 1, request.page_token)
        page = found[:size]
        token = page[-1].name if len(found) > size else ""
        return tenants_pb2.ListTenantsResponse(
            tenants=[tenant_message(t) for t in page], next_page_token=token
        )

    async def UpdateTenant(
        self, request: tenants_pb2.UpdateTenantRequest, context: Context
    ) -> tenants_pb2.Tenant:
        principal = await self._admin(context)
        if not request.tenant.id:
            raise InvalidArgument(
                "the tenant's id is required", [FieldViolation("tenant.id", "required")]
            )
        changes = update_fields(request)
        t = request.tenant
        environment = None
        if "default_environment" in changes:
            environment = t.default_environment
            if environment:  # must exist; "" clears the default
                await self.environments.describe(
                    environment, principal.tenant_id, "tenant.default_environment"
                )
        updated = await self.store.update_tenant(
            t.id,
            max_concurrency=t.max_concurrency if "max_concurrency" in changes else None,
            rate=rate_of(t.rate_limit) if "rate_limit" in changes else None,
            default_environment=environment,
        )
        return tenant_message(updated)

    async def CreateApiKey(
        self, request: tenants_pb2.CreateApiKeyRequest, context: Context
    ) -> tenants_pb2.CreateApiKeyResponse:
        principal = await self._key_manager(context)
        request.tenant_id = principal.tenant(request.tenant_id)
        scopes = granted_scopes(principal, list(request.api_key.scopes))

        async def create() -> tenants_pb2.CreateApiKeyResponse:
            record, token = await self.store.create_key(
                request.tenant_id,
                request.api_key.description,
                scopes,
                request.request_id,
                rate_of(request.api_key.rate_limit),
            )
            return tenants_pb2.CreateApiKeyResponse(api_key=key_message(record), secret=token or "")

        return await idempotent(self.ledger, principal, context, "CreateApiKey", request, create)

    async def ListApiKeys(
        self, request: tenants_pb2.ListApiKeysRequest, context: Context
    ) -> tenants_pb2.ListApiKeysResponse:
        principal = await self._key_manager(context)
        records = await self.store.list_keys(principal.tenant(request.tenant_id))
        return tenants_pb2.ListApiKeysResponse(api_keys=[key_message(r) for r in records])

    async def RevokeApiKey(
        self, request: tenants_pb2.RevokeApiKeyRequest, context: Context
    ) -> tenants_pb2.ApiKey:
        principal = await self._key_manager(context)
        record = await self.store.revoke_key(principal.tenant(request.tenant_id), request.id)
        self.auth.forget(record.id)
        return key_message(record)

    async def GetTenantBudget(
        self, request: tenants_pb2.GetTenantBudgetRequest, context: Context
    ) -> tenants_pb2.TenantBudget:
        principal = await self.auth.authenticate(context)
        tenant = await self.store.get_tenant(principal.tenant(request.tenant_id))
        ask = scheduler_pb2.GetTenantBudgetRequest(tenant=tenant.id)
        return budget_message(await forward(self.scheduler.GetTenantBudget, ask, principal))

    async def UpdateTenantBudget(
        self, request: tenants_pb2.UpdateTenantBudgetRequest, context: Context
    ) -> tenants_pb2.TenantBudget:
        principal = await self._admin(context)
        violations = []
        if not request.tenant_id:
            violations.append(FieldViolation("tenant_id", "the tenant's id is required"))
        if not math.isfinite(request.limit_usd) or request.limit_usd < 0:
            violations.append(FieldViolation("limit_usd", "must be a number >= 0 (0: no limit)"))
        if violations:
            raise InvalidArgument("the budget is invalid", violations)
        tenant = await self.store.get_tenant(request.tenant_id)
        change = scheduler_pb2.SetTenantBudgetRequest(tenant=tenant.id, limit_usd=request.limit_usd)
        return budget_message(await forward(self.scheduler.SetTenantBudget, change, principal))


def budget_message(budget: scheduler_pb2.TenantBudget) -> tenants_pb2.TenantBudget:
    return tenants_pb2.TenantBudget(
        tenant_id=budget.tenant,
        limit_usd=budget.limit_usd,
        spent_usd=budget.spent_usd,
        period_start_time=budget.period_start_time,
        period_end_time=budget.period_end_time,
    )


def _rate_message(rate: Rate) -> tenants_pb2.RateLimit:
    return tenants_pb2.RateLimit(requests_per_second=rate.per_second, burst=rate.burst)


def tenant_message(tenant: Tenant) -> tenants_pb2.Tenant:
    return tenants_pb2.Tenant(
        id=tenant.id,
        name=tenant.name,
        max_concurrency=tenant.max_concurrency,
        create_time=to_timestamp(tenant.created_at),
        rate_limit=_rate_message(tenant.rate),
        default_environment=tenant.default_environment,
    )


def key_message(record: ApiKeyRecord) -> tenants_pb2.ApiKey:
    return tenants_pb2.ApiKey(
        id=record.id,
        tenant_id=record.tenant_id,
        description=record.description,
        scopes=list(record.scopes),
        create_time=to_timestamp(record.created_at),
        revoke_time=to_timestamp(record.revoked_at),
        rate_limit=_rate_message(record.rate),
    )
