"""The public gRPC API: authenticate, check, then forward to the service that owns the data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import message

from comfyfleet.common.errors import FieldViolation, InvalidArgument, from_rpc_error
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.common.workflowcheck import check_workflow
from comfyfleet.environments.v1 import environments_pb2, environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from comfyfleet.workflow.budget import RESOURCE_BUDGET, BudgetReason, ResourceBudget
from services.gateway.auth import Authenticator, Principal
from services.gateway.environments import EnvironmentCatalogs, resolve_environment
from services.gateway.fetch import InputFetcher
from services.gateway.idempotency import Ledger, fill_request_id
from services.gateway.validation import workflow_text

Context: TypeAlias = grpc.aio.ServicerContext
R = TypeVar("R")


async def forward(
    call: Callable[..., Awaitable[R]],
    request: Any,
    principal: Principal,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> R:
    """One unary call to an internal service on the caller's behalf; its errors pass through."""
    try:
        return await call(request, metadata=metadata or tenant_metadata(principal.tenant_id))
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


async def idempotent(
    ledger: Ledger,
    principal: Principal,
    context: Context,
    method: str,
    request: message.Message,
    create: Callable[[], Awaitable[R]],
    replay: Callable[[str], Awaitable[R]] | None = None,
) -> R:
    """``create`` under the request's ``request_id`` (or its Idempotency-Key header)."""
    request_id = fill_request_id(request, context.invocation_metadata() or ())
    if not request_id:
        return await create()
    return await ledger.once(
        (principal.tenant_id, method, request_id),
        request,
        create,
        lambda made: str(getattr(made, "id", "")),
        replay,
    )


class ExecutionsServicer(executions_pb2_grpc.ExecutionServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        ledger: Ledger,
        scheduler: executions_pb2_grpc.ExecutionServiceStub,
        catalogs: EnvironmentCatalogs,
        fetcher: InputFetcher,
        default_environment: str,
        *,
        budget: ResourceBudget = RESOURCE_BUDGET,
    ) -> None:
        self.auth = auth
        self.ledger = ledger
        self.scheduler = scheduler
        self.catalogs = catalogs
        self.fetcher = fetcher
        self.default_environment = default_environment
        self.budget = budget

    async def CreateExecution(
        self, request: executions_pb2.CreateExecutionRequest, context: Context
    ) -> executions_pb2.Execution:
        principal = await self.auth.authenticate(context)
        principal.require("executions:write")
        text = workflow_text(request.workflow_json, request.workflow)
        environment = resolve_environment(
            request.environment, principal.default_environment, self.default_environment
        )
        catalog = await self.catalogs.catalog(environment, principal.tenant_id)
        check_workflow(text, catalog, budget=self.budget)
        _check_inputs(request, self.budget)

        async def create() -> executions_pb2.Execution:
            return await self._create(request, text, environment, principal)

        async def replay(execution_id: str) -> executions_pb2.Execution:
            # A retry reads what the first request made, without downloading its URLs again.
            get = executions_pb2.GetExecutionRequest(id=execution_id)
            return await forward(self.scheduler.GetExecution, get, principal)

        return await idempotent(
            self.ledger, principal, context, "CreateExecution", request, create, replay
        )

    async def _create(
        self,
        request: executions_pb2.CreateExecutionRequest,
        text: str,
        environment: str,
        principal: Principal,
    ) -> executions_pb2.Execution:
        forwarded = executions_pb2.CreateExecutionRequest()
        forwarded.CopyFrom(request)
        forwarded.ClearField("workflow")
        forwarded.workflow_json = text
        # The scheduler records and routes by the environment the workflow was checked for.
        forwarded.environment = environment
        if any(i.WhichOneof("source") == "url" for i in request.inputs):
            del forwarded.inputs[:]
            forwarded.inputs.extend(await self.fetcher.inline(request.inputs))
        metadata = tenant_metadata(principal.tenant_id, max_concurrency=principal.max_concurrency)
        return await forward(self.scheduler.CreateExecution, forwarded, principal, metadata)

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

    async def CreateInputUpload(
        self, request: executions_pb2.CreateInputUploadRequest, context: Context
    ) -> executions_pb2.InputUpload:
        principal = await self.auth.authenticate(context)
        principal.require("executions:write")

        async def create() -> executions_pb2.InputUpload:
            # A retry is answered by the scheduler, which returns the first upload.
            return await forward(self.scheduler.CreateInputUpload, request, principal)

        return await idempotent(
            self.ledger, principal, context, "CreateInputUpload", request, create
        )


def _check_inputs(request: executions_pb2.CreateExecutionRequest, budget: ResourceBudget) -> None:
    violations = []
    seen: set[str] = set()
    for i, item in enumerate(request.inputs):
        if not item.name or "/" in item.name or item.name.startswith("."):
            violations.append(FieldViolation(f"inputs[{i}].name", "must be a plain file name"))
        elif item.name in seen:
            violations.append(FieldViolation(f"inputs[{i}].name", f"{item.name!r} is given twice"))
        seen.add(item.name)
        source = item.WhichOneof("source")
        if source is None:
            violations.append(FieldViolation(f"inputs[{i}]", "needs content, url or upload_id"))
        elif source == "content":
            # Only the header is read: a decompression bomb is refused before it is stored.
            problem = budget.input_image_problem(item.content)
            if problem is not None:
                violations.append(
                    FieldViolation(
                        f"inputs[{i}].content",
                        f"the image {item.name!r} {problem}",
                        BudgetReason.INPUT_IMAGE_TOO_LARGE,
                    )
                )
    if violations:
        raise InvalidArgument("the input files are not valid", violations)


# The scope each webhook method needs; None: any key of the tenant may call it.
WEBHOOK_SCOPES: dict[str, str | None] = {
    "CreateSubscription": "webhooks:write",
    "GetSubscription": None,
    "ListSubscriptions": None,
    "UpdateSubscription": "webhooks:write",
    "RotateSubscriptionSecret": "webhooks:write",
    "PingSubscription": "webhooks:write",
    "DeleteSubscription": "webhooks:write",
    "ListDeliveries": None,
    "GetDelivery": None,
    "ListDeliveryAttempts": None,
    "RedeliverDelivery": "webhooks:write",
    "RecoverDeliveries": "webhooks:write",
}


class WebhooksServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    """Forwards every method to the webhook service on the caller's behalf."""

    def __init__(
        self,
        auth: Authenticator,
        ledger: Ledger,
        backend: webhooks_pb2_grpc.WebhookServiceStub,
    ) -> None:
        self.auth = auth
        self.ledger = ledger
        self.backend = backend

    async def _call(self, name: str, request: Any, context: Context) -> Any:
        principal = await self.auth.authenticate(context)
        scope = WEBHOOK_SCOPES[name]
        if scope is not None:
            principal.require(scope)
        return await forward(getattr(self.backend, name), request, principal)

    async def CreateSubscription(
        self, request: webhooks_pb2.CreateSubscriptionRequest, context: Context
    ) -> webhooks_pb2.Subscription:
        principal = await self.auth.authenticate(context)
        principal.require("webhooks:write")

        async def create() -> webhooks_pb2.Subscription:
            return await forward(self.backend.CreateSubscription, request, principal)

        # No replay by id: the webhook service's own replay returns the secret too.
        return await idempotent(
            self.ledger, principal, context, "CreateSubscription", request, create
        )

    async def GetSubscription(
        self, request: webhooks_pb2.GetSubscriptionRequest, context: Context
    ) -> webhooks_pb2.Subscription:
        return await self._call("GetSubscription", request, context)

    async def ListSubscriptions(
        self, request: webhooks_pb2.ListSubscriptionsRequest, context: Context
    ) -> webhooks_pb2.ListSubscriptionsResponse:
        return await self._call("ListSubscriptions", request, context)

    async def UpdateSubscription(
        self, request: webhooks_pb2.UpdateSubscriptionRequest, context: Context
    ) -> webhooks_pb2.Subscription:
        return await self._call("UpdateSubscription", request, context)

    async def RotateSubscriptionSecret(
        self, request: webhooks_pb2.RotateSubscriptionSecretRequest, context: Context
    ) -> webhooks_pb2.RotateSubscriptionSecretResponse:
        return await self._call("RotateSubscriptionSecret", request, context)

    async def PingSubscription(
        self, request: webhooks_pb2.PingSubscriptionRequest, context: Context
    ) -> webhooks_pb2.Delivery:
        return await self._call("PingSubscription", request, context)

    async def DeleteSubscription(
        self, request: webhooks_pb2.DeleteSubscriptionRequest, context: Context
    ) -> webhooks_pb2.DeleteSubscriptionResponse:
        return await self._call("DeleteSubscription", request, context)

    async def ListDeliveries(
        self, request: webhooks_pb2.ListDeliveriesRequest, context: Context
    ) -> webhooks_pb2.ListDeliveriesResponse:
        return await self._call("ListDeliveries", request, context)

    async def GetDelivery(
        self, request: webhooks_pb2.GetDeliveryRequest, context: Context
    ) -> webhooks_pb2.Delivery:
        return await self._call("GetDelivery", request, context)

    async def ListDeliveryAttempts(
        self, request: webhooks_pb2.ListDeliveryAttemptsRequest, context: Context
    ) -> webhooks_pb2.ListDeliveryAttemptsResponse:
        return await self._call("ListDeliveryAttempts", request, context)

    async def RedeliverDelivery(
        self, request: webhooks_pb2.RedeliverDeliveryRequest, context: Context
    ) -> webhooks_pb2.Delivery:
        return await self._call("RedeliverDelivery", request, context)

    async def RecoverDeliveries(
        self, request: webhooks_pb2.RecoverDeliveriesRequest, context: Context
    ) -> webhooks_pb2.RecoverDeliveriesResponse:
        return await self._call("RecoverDeliveries", request, context)


class ModelsServicer(models_pb2_grpc.ModelServiceServicer):
    """Forwards every method to the models service on the caller's behalf."""

    def __init__(
        self, auth: Authenticator, backend: models_pb2_grpc.ModelServiceStub, ledger: Ledger
    ) -> None:
        self.auth = auth
        self.backend = backend
        self.ledger = ledger

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

    async def StartModelUpload(
        self, request: models_pb2.StartModelUploadRequest, context: Context
    ) -> models_pb2.StartModelUploadResponse:
        principal = await self.auth.authenticate(context)
        principal.require("models:write")

        async def start() -> models_pb2.StartModelUploadResponse:
            return await forward(self.backend.StartModelUpload, request, principal)

        # A retry is answered by the models service, which finds the upload by request_id.
        return await idempotent(self.ledger, principal, context, "StartModelUpload", request, start)

    async def CompleteModelUpload(
        self, request: models_pb2.CompleteModelUploadRequest, context: Context
    ) -> models_pb2.Model:
        principal = await self.auth.authenticate(context)
        principal.require("models:write")
        return await forward(self.backend.CompleteModelUpload, request, principal)

    async def AbortModelUpload(
        self, request: models_pb2.AbortModelUploadRequest, context: Context
    ) -> models_pb2.AbortModelUploadResponse:
        principal = await self.auth.authenticate(context)
        principal.require("models:write")
        return await forward(self.backend.AbortModelUpload, request, principal)

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


class EnvironmentsServicer(environments_pb2_grpc.EnvironmentServiceServicer):
    """Forwards to the scheduler, which keeps environments: every key reads them, only admin
    keys declare or delete them."""

    def __init__(
        self,
        auth: Authenticator,
        ledger: Ledger,
        backend: environments_pb2_grpc.EnvironmentServiceStub,
        catalogs: EnvironmentCatalogs,
    ) -> None:
        self.auth = auth
        self.ledger = ledger
        self.backend = backend
        self.catalogs = catalogs

    async def GetEnvironment(
        self, request: environments_pb2.GetEnvironmentRequest, context: Context
    ) -> environments_pb2.Environment:
        principal = await self.auth.authenticate(context)
        return await forward(self.backend.GetEnvironment, request, principal)

    async def ListEnvironments(
        self, request: environments_pb2.ListEnvironmentsRequest, context: Context
    ) -> environments_pb2.ListEnvironmentsResponse:
        principal = await self.auth.authenticate(context)
        return await forward(self.backend.ListEnvironments, request, principal)

    async def GetEnvironmentCatalog(
        self, request: environments_pb2.GetEnvironmentCatalogRequest, context: Context
    ) -> environments_pb2.EnvironmentCatalog:
        principal = await self.auth.authenticate(context)
        return await forward(self.backend.GetEnvironmentCatalog, request, principal)

    async def CreateEnvironment(
        self, request: environments_pb2.CreateEnvironmentRequest, context: Context
    ) -> environments_pb2.Environment:
        principal = await self.auth.authenticate(context)
        principal.require("admin")

        async def create() -> environments_pb2.Environment:
            # A retry is answered by the scheduler, which finds the first by request_id.
            return await forward(self.backend.CreateEnvironment, request, principal)

        created = await idempotent(
            self.ledger, principal, context, "CreateEnvironment", request, create
        )
        self.catalogs.forget(created.name)
        return created

    async def DeleteEnvironment(
        self, request: environments_pb2.DeleteEnvironmentRequest, context: Context
    ) -> environments_pb2.DeleteEnvironmentResponse:
        principal = await self.auth.authenticate(context)
        principal.require("admin")
        deleted = await forward(self.backend.DeleteEnvironment, request, principal)
        self.catalogs.forget(request.name)
        return deleted
