"""Small servicers of the public services that echo what reached them, or raise our error types.

They stand in for the gateway's gRPC server, so the REST front is driven over a real gRPC
server with the same error interceptor. Each records the calls it received; a test that
expects the transcoder to refuse a request asserts that nothing was recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from google.protobuf import message

from comfyfleet.common import errors
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

NODE_ERRORS = {
    "4": {
        "errors": [
            {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": "ckpt_name: 'nope.safetensors' not in []",
                "extra_info": {"input_name": "ckpt_name"},
            }
        ],
        "dependent_outputs": ["9"],
        "class_type": "CheckpointLoaderSimple",
    }
}
EVENTS_PER_WATCH = 3


@dataclass
class Call:
    method: str
    request: message.Message
    metadata: dict[str, str]


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    # Ids of held watch streams that were cancelled, i.e. whose client went away.
    cancelled_watches: set[str] = field(default_factory=set)

    def record(
        self, method: str, request: message.Message, context: grpc.aio.ServicerContext
    ) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.calls.append(Call(method, request, metadata))

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def reset(self) -> None:
        self.calls.clear()


def raise_for(key: str) -> None:
    """Raises the error a test asks for by naming it as an id."""
    if key == "missing":
        raise errors.NotFound(f"execution {key!r} does not exist")
    if key == "noauth":
        raise errors.Unauthenticated("missing or invalid API key")
    if key == "forbidden":
        raise errors.PermissionDenied("the key lacks the executions:read scope")
    if key == "quota":
        raise errors.ResourceExhausted(
            "too many requests",
            retry_after_s=7.2,
            quota=[errors.QuotaViolation("tenant:t1", "60 requests per minute")],
        )
    if key == "conflict":
        raise errors.AlreadyExists("already exists")
    if key == "unavailable":
        raise errors.Unavailable("scheduler is unavailable")
    if key == "boom":
        raise RuntimeError("a bug that must not leak")


class Executions(executions_pb2_grpc.ExecutionServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def CreateExecution(
        self, request: executions_pb2.CreateExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executions_pb2.Execution:
        self.recorder.record("CreateExecution", request, context)
        if request.workflow_json == "invalid":
            raise errors.InvalidArgument(
                "workflow validation failed",
                [errors.FieldViolation('workflow["4"].inputs.ckpt_name', "not in list", "NODE")],
                metadata={"comfyui_node_errors": json.dumps(NODE_ERRORS)},
            )
        return executions_pb2.Execution(
            id="e-created",
            state=executions_pb2.EXECUTION_STATE_QUEUED,
            workflow=request.workflow,
            priority=request.priority,
            labels=request.labels,
            request_id=request.request_id,
            input_names=[i.name for i in request.inputs],
        )

    async def GetExecution(
        self, request: executions_pb2.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executions_pb2.Execution:
        self.recorder.record("GetExecution", request, context)
        if request.id == "slow":
            await asyncio.Event().wait()
        raise_for(request.id)
        await context.send_initial_metadata([("x-served-by", "test-servicer")])
        context.set_trailing_metadata([("x-cost-usd", "0.25")])
        execution = executions_pb2.Execution(id=request.id, max_attempts=3)
        execution.create_time.FromSeconds(1_700_000_000)
        if request.id == "nan":
            # Valid protobuf, but proto3 JSON has no way to write it.
            execution.workflow["seed"] = float("nan")
        return execution

    async def ListExecutions(
        self, request: executions_pb2.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> executions_pb2.ListExecutionsResponse:
        self.recorder.record("ListExecutions", request, context)
        page = [executions_pb2.Execution(id=f"e{i}", state=request.state) for i in range(2)]
        token = f"{request.page_size}/{request.page_token}"
        return executions_pb2.ListExecutionsResponse(executions=page, next_page_token=token)

    async def CancelExecution(
        self, request: executions_pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executions_pb2.Execution:
        self.recorder.record("CancelExecution", request, context)
        raise_for(request.id)
        return executions_pb2.Execution(
            id=request.id, state=executions_pb2.EXECUTION_STATE_CANCELLED
        )

    async def WatchExecution(
        self, request: executions_pb2.WatchExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executions_pb2.WorkflowExecutionEvent]:
        self.recorder.record("WatchExecution", request, context)
        raise_for(request.id)
        for sequence in range(request.after_sequence + 1, EVENTS_PER_WATCH + 1):
            event = _event(request.id, sequence)
            if request.id == "unwritable" and sequence == 2:
                # Valid protobuf, but this process cannot write an Any of an unknown type.
                event.error.details.add(type_url="type.googleapis.com/unknown.Type")
            yield event
            if request.id == "fail-midway":
                raise errors.Unavailable("the event stream broke")
        if request.id.startswith("hold"):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.recorder.cancelled_watches.add(request.id)
                raise


def _event(execution_id: str, sequence: int) -> executions_pb2.WorkflowExecutionEvent:
    return executions_pb2.WorkflowExecutionEvent(
        event_id=f"{execution_id}-{sequence}",
        execution_id=execution_id,
        event_type="execution.progress",
        status=executions_pb2.EXECUTION_STATE_RUNNING,
        sequence=sequence,
    )


class Tenants(tenants_pb2_grpc.TenantServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def CreateTenant(
        self, request: tenants_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> tenants_pb2.Tenant:
        self.recorder.record("CreateTenant", request, context)
        raise_for(request.tenant.name)
        tenant = tenants_pb2.Tenant()
        tenant.CopyFrom(request.tenant)
        tenant.id = "t-new"
        return tenant

    async def CreateApiKey(
        self, request: tenants_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> tenants_pb2.CreateApiKeyResponse:
        self.recorder.record("CreateApiKey", request, context)
        key = tenants_pb2.ApiKey()
        key.CopyFrom(request.api_key)
        key.id, key.tenant_id = "k-new", request.tenant_id
        return tenants_pb2.CreateApiKeyResponse(api_key=key, secret="cfk_secret")

    async def RevokeApiKey(
        self, request: tenants_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> tenants_pb2.ApiKey:
        self.recorder.record("RevokeApiKey", request, context)
        key = tenants_pb2.ApiKey(id=request.id, tenant_id=request.tenant_id)
        key.revoke_time.FromSeconds(1_700_000_000)
        return key


class Webhooks(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def UpdateSubscription(
        self, request: webhooks_pb2.UpdateSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.Subscription:
        self.recorder.record("UpdateSubscription", request, context)
        return request.subscription

    async def DeleteSubscription(
        self, request: webhooks_pb2.DeleteSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.DeleteSubscriptionResponse:
        self.recorder.record("DeleteSubscription", request, context)
        raise_for(request.id)
        return webhooks_pb2.DeleteSubscriptionResponse()

    async def ListDeliveries(
        self, request: webhooks_pb2.ListDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.ListDeliveriesResponse:
        self.recorder.record("ListDeliveries", request, context)
        delivery = webhooks_pb2.Delivery(
            subscription_id=request.subscription_id, state=request.state
        )
        return webhooks_pb2.ListDeliveriesResponse(deliveries=[delivery])

    async def RecoverDeliveries(
        self, request: webhooks_pb2.RecoverDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.RecoverDeliveriesResponse:
        self.recorder.record("RecoverDeliveries", request, context)
        return webhooks_pb2.RecoverDeliveriesResponse(recovered_count=request.since.seconds % 1000)


class Models(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def ResolveModels(
        self, request: models_pb2.ResolveModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ResolveModelsResponse:
        self.recorder.record("ResolveModels", request, context)
        names = json.loads(request.workflow_json)
        resolved = [
            models_pb2.ResolvedModel(node_id=node, input_name="ckpt_name") for node in sorted(names)
        ]
        return models_pb2.ResolveModelsResponse(models=resolved)
