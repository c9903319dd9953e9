"""The public gRPC API: authenticate, check, then forward to the service that owns the data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from comfyfleet.common.errors import FieldViolation, InvalidArgument, from_rpc_error
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.common.timeutil import to_timestamp
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from comfyfleet.workflow.specs import NodeCatalog
from services.gateway.auth import Authenticator, Principal
from services.gateway.tenants import ApiKeyRecord, Tenant, TenantStore
from services.gateway.validation import check_workflow, workflow_text

Context: TypeAlias = grpc.aio.ServicerContext
R = TypeVar("R")


async def forward(call: Callable[..., Awaitable[R]], request: Any, principal: Principal) -> R:
    """One unary call to an internal service on the caller's behalf; its errors pass through."""
    try:
        return await call(request, metadata=tenant_metadata(principal.tenant_id))
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from None


async def forward_stream(
    call: Callable[..., Any], request: Any, principal: Principal
) -> AsyncIterator[Any]:
    stream = call(request, metadata=tenant_metadata(principal.tenant_id))
    try:
        async for item in stream:
            yield item
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from None
    finally:
        stream.cancel()


class ExecutionsServicer(executions_pb2_grpc.ExecutionServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        scheduler: executions_pb2_grpc.ExecutionServiceStub,
        catalog: NodeCatalog,
    ) -> None:
        self.auth = auth
        self.scheduler = scheduler
        self.catalog = catalog

    async def CreateExecution(
        self, request: executions_pb2.CreateExecutionRequest, context: Context
    ) -> executions_pb2.Execution:
        principal = await self.auth.authenticate(context)
        principal.require("executions:write")
        text = workflow_text(request.workflow_json, request.workflow)
        check_workflow(text, self.catalog)
        _check_inputs(request)
        forwarded = executions_pb2.CreateExecutionRequest()
        forwarded.CopyFrom(request)
        forwarded.ClearField("workflow")
        forwarded.workflow_json = text
        return await forward(self.scheduler.CreateExecution, forwarded, principal)

    async def GetExecution(
        self, request: executions_pb2.GetExecutionRequest, context: Context
    ) -> executions_pb2.Execution:
        principal = await self.auth.authenticate(context)
        return await forward(self.scheduler.GetExecution, request, principal)

    async def ListExecutions(
        self, request: executions_pb2.ListExecutionsRequest, context: Context
    ) -> executions_pb2.ListExecutionsResponse:
        principal = await self.auth.authenticate(context)
        return await forward(self.scheduler.ListExecutions, request, principal)

    async def CancelExecution(
        self, request: executions_pb2.CancelExecutionRequest, context: Context
    ) -> executions_pb2.Execution:
        principal = await self.auth.authenticate(context)
        principal.require("executions:write")
        return await forward(self.scheduler.CancelExecution, request, principal)

    async def WatchExecution(
        self, request: executions_pb2.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[executions_pb2.WorkflowExecutionEvent]:
        principal = await self.auth.authenticate(context)
        async for event in forward_stream(self.scheduler.WatchExecution, request, principal):
            yield event


def _check_inputs(request: executions_pb2.CreateExecutionRequest) -> None:
    violations = []
    seen: set[str] = set()
    for i, item in enumerate(request.inputs):
        if not item.name or "/" in item.name or item.name.startswith("."):
            violations.append(FieldViolation(f"inputs[{i}].name", "must be a plain file name"))
        elif item.name in seen:
            violations.append(FieldViolation(f"inputs[{i}].name", f"{item.name!r} is given twice"))
        seen.add(item.name)
        if item.WhichOneof("source") is None:
            violations.append(FieldViolation(f"inputs[{i}]", "needs content or url"))
    if violations:
        raise InvalidArgument("the input files are not valid", violations)


class TenantsServicer(tenants_pb2_grpc.TenantServiceServicer):
    """Tenants and keys live in the gateway's own schema; only admin keys reach them."""

    def __init__(self, auth: Authenticator, store: TenantStore) -> None:
        self.auth = auth
        self.store = store

    async def _admin(self, context: Context) -> Principal:
        principal = await self.auth.authenticate(context)
        principal.require("admin")
        return principal

    async def CreateTenant(
        self, request: tenants_pb2.CreateTenantRequest, context: Context
    ) -> tenants_pb2.Tenant:
        await self._admin(context)
        tenant = await self.store.create_tenant(
            request.tenant.name, request.tenant.max_concurrency, request.request_id
        )
        return tenant_message(tenant)

    async def GetTenant(
        self, request: tenants_pb2.GetTenantRequest, context: Context
    ) -> tenants_pb2.Tenant:
        await self._admin(context)
        return tenant_message(await self.store.get_tenant(request.id))

    async def ListTenants(
        self, request: tenants_pb2.ListTenantsRequest, context: Context
    ) -> tenants_pb2.ListTenantsResponse:
        await self._admin(context)
        size = min(request.page_size or 50, 500)
        found = await self.store.list_tenants(size + 1, request.page_token)
        page = found[:size]
        token = page[-1].name if len(found) > size else ""
        return tenants_pb2.ListTenantsResponse(
            tenants=[tenant_message(t) for t in page], next_page_token=token
        )

    async def CreateApiKey(
        self, request: tenants_pb2.CreateApiKeyRequest, context: Context
    ) -> tenants_pb2.CreateApiKeyResponse:
        await self._admin(context)
        record, token = await self.store.create_key(
            request.tenant_id,
            request.api_key.description,
            list(request.api_key.scopes),
            request.request_id,
        )
        return tenants_pb2.CreateApiKeyResponse(api_key=key_message(record), secret=token or "")

    async def ListApiKeys(
        self, request: tenants_pb2.ListApiKeysRequest, context: Context
    ) -> tenants_pb2.ListApiKeysResponse:
        await self._admin(context)
        records = await self.store.list_keys(request.tenant_id)
        return tenants_pb2.ListApiKeysResponse(api_keys=[key_message(r) for r in records])

    async def RevokeApiKey(
        self, request: tenants_pb2.RevokeApiKeyRequest, context: Context
    ) -> tenants_pb2.ApiKey:
        await self._admin(context)
        record = await self.store.revoke_key(request.tenant_id, request.id)
        self.auth.forget(record.id)
        return key_message(record)


def tenant_message(tenant: Tenant) -> tenants_pb2.Tenant:
    return tenants_pb2.Tenant(
        id=tenant.id,
        name=tenant.name,
        max_concurrency=tenant.max_concurrency,
        create_time=to_timestamp(tenant.created_at),
    )


def key_message(record: ApiKeyRecord) -> tenants_pb2.ApiKey:
    return tenants_pb2.ApiKey(
        id=record.id,
        tenant_id=record.tenant_id,
        description=record.description,
        scopes=list(record.scopes),
        create_time=to_timestamp(record.created_at),
        revoke_time=to_timestamp(record.revoked_at),
    )


class WebhooksServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    """Forwards every method to the webhook service on the caller's behalf."""

    def __init__(self, auth: Authenticator, backend: webhooks_pb2_grpc.WebhookServiceStub) -> None:
        self.auth = auth
        self.backend = backend

    async def _call(self, name: str, request: Any, context: Context, *, write: bool) -> Any:
        principal = await self.auth.authenticate(context)
        if write:
            principal.require("webhooks:write")
        return await forward(getattr(self.backend, name), request, principal)

    async def CreateSubscription(
        self, request: webhooks_pb2.CreateSubscriptionRequest, context: Context
    ) -> webhooks_pb2.Subscription:
        return await self._call("CreateSubscription", request, context, write=True)

    async def GetSubscription(
        self, request: webhooks_pb2.GetSubscriptionRequest, context: Context
    ) -> webhooks_pb2.Subscription:
        return await self._call("GetSubscription", request, context, write=False)

    async def ListSubscriptions(
        self, request: webhooks_pb2.ListSubscriptionsRequest, context: Context
    ) -> webhooks_pb2.ListSubscriptionsResponse:
        return await self._call("ListSubscriptions", request, context, write=False)

    async def DeleteSubscription(
        self, request: webhooks_pb2.DeleteSubscriptionRequest, context: Context
    ) -> webhooks_pb2.DeleteSubscriptionResponse:
        return await self._call("DeleteSubscription", request, context, write=True)

    async def ListDeliveries(
        self, request: webhooks_pb2.ListDeliveriesRequest, context: Context
    ) -> webhooks_pb2.ListDeliveriesResponse:
        return await self._call("ListDeliveries", request, context, write=False)


class ModelsServicer(models_pb2_grpc.ModelServiceServicer):
    """Forwards every method to the models service on the caller's behalf."""

    def __init__(self, auth: Authenticator, backend: models_pb2_grpc.ModelServiceStub) -> None:
        self.auth = auth
        self.backend = backend

    async def UploadModel(
        self, request_iterator: AsyncIterator[models_pb2.UploadModelRequest], context: Context
    ) -> models_pb2.Model:
        principal = await self.auth.authenticate(context)
        principal.require("models:write")
        try:
            return await self.backend.UploadModel(
                request_iterator, metadata=tenant_metadata(principal.tenant_id)
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: Context
    ) -> models_pb2.Model:
        principal = await self.auth.authenticate(context)
        return await forward(self.backend.GetModel, request, principal)

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        principal = await self.auth.authenticate(context)
        return await forward(self.backend.ListModels, request, principal)

    async def DeleteModel(
        self, request: models_pb2.DeleteModelRequest, context: Context
    ) -> models_pb2.DeleteModelResponse:
        principal = await self.auth.authenticate(context)
        principal.require("models:write")
        return await forward(self.backend.DeleteModel, request, principal)

    async def ResolveModels(
        self, request: models_pb2.ResolveModelsRequest, context: Context
    ) -> models_pb2.ResolveModelsResponse:
        principal = await self.auth.authenticate(context)
        return await forward(self.backend.ResolveModels, request, principal)
