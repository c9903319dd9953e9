"""Tenant isolation, method by method: tenant B calls EVERY public method (read from the
service descriptors, so a new method cannot be forgotten) with the ids of tenant A's
execution, model, subscription, delivery, key and tenant. Whatever names A's resources is
NOT_FOUND, lists show none of them, creates make B's own, and A's resources are unchanged.
The same walk runs over REST, through the routes transcoded from the same descriptors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from google.protobuf import descriptor, json_format, message, message_factory
from safetensors.numpy import save

from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.models.v1 import models_pb2
from comfyfleet.tenants.v1 import tenants_pb2
from comfyfleet.webhooks.v1 import webhooks_pb2
from services.gateway.rest.routing import resolve_services, routes_of
from services.gateway.server import PUBLIC_SERVICES
from tests.e2e.conftest import Platform
from tests.e2e.receiver import webhook_receiver
from tests.support import eventually
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
WORKFLOW = (REF / "workflows" / "r01_invert.json").read_text()
PNG = (REF / "inputs" / "shapes.png").read_bytes()
MODEL_NAME = "isolated.safetensors"
FULL = ["executions:write", "models:write", "webhooks:write", "keys:write"]
Metadata = tuple[tuple[str, str], ...]

# Methods that name no resource of A, and what B must get from them instead of NOT_FOUND.
NOT_BY_ID = {
    "comfyfleet.executions.v1.ExecutionService.CreateExecution": "own",
    "comfyfleet.executions.v1.ExecutionService.ListExecutions": "list",
    # Names no upload; B naming A's upload in CreateExecution is tested in test_uploads.py.
    "comfyfleet.executions.v1.ExecutionService.CreateInputUpload": "own",
    "comfyfleet.tenants.v1.TenantService.CreateTenant": "admin only",
    "comfyfleet.tenants.v1.TenantService.ListTenants": "admin only",
    # Names A's tenant, but only admins may update any tenant: refused before any lookup.
    "comfyfleet.tenants.v1.TenantService.UpdateTenant": "admin only",
    "comfyfleet.tenants.v1.TenantService.UpdateTenantBudget": "admin only",
    # The whole platform's state, for operators only.
    "comfyfleet.operations.v1.OperationsService.GetOverview": "admin only",
    "comfyfleet.webhooks.v1.WebhookService.CreateSubscription": "own",
    "comfyfleet.webhooks.v1.WebhookService.ListSubscriptions": "list",
    "comfyfleet.models.v1.ModelService.UploadModel": "own",
    "comfyfleet.models.v1.ModelService.StartModelUpload": "own",
    "comfyfleet.models.v1.ModelService.ListModels": "list",
    # Names A's model by name: B must get what a name nobody registered gets.
    "comfyfleet.models.v1.ModelService.ResolveModels": "as if unknown",
    # Environments belong to the platform, not to a tenant: every key reads them, and only
    # admin keys declare or delete them.
    "comfyfleet.environments.v1.EnvironmentService.GetEnvironment": "shared",
    "comfyfleet.environments.v1.EnvironmentService.GetEnvironmentCatalog": "shared",
    "comfyfleet.environments.v1.EnvironmentService.ListEnvironments": "list",
    "comfyfleet.environments.v1.EnvironmentService.CreateEnvironment": "admin only",
    "comfyfleet.environments.v1.EnvironmentService.DeleteEnvironment": "admin only",
}


@dataclass(frozen=True)
class Owned:
    """Tenant A's resources."""

    tenant_id: str
    key_id: str
    execution_id: str
    model_id: str
    subscription_id: str
    delivery_id: str
    # A multipart model upload A started and has not completed, and its one part's URL.
    model_upload_id: str
    model_upload_url: str = ""

    def ids(self) -> list[str]:
        return [
            self.key_id,
            self.execution_id,
            self.model_id,
            self.subscription_id,
            self.delivery_id,
            self.model_upload_id,
        ]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def methods() -> list[descriptor.MethodDescriptor]:
    return [m for s in resolve_services(PUBLIC_SERVICES) for m in s.methods]


def full_name(method: descriptor.MethodDescriptor) -> str:
    return f"{method.containing_service.full_name}.{method.name}"


def workflow_naming(model_name: str) -> str:
    return json.dumps(
        {
            "1": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": model_name},
            }
        }
    )


def id_value(service: str, msg: message.Message, name: str, owned: Owned) -> str | None:
    """The id of A's resource that field ``name`` of a request of ``service`` names."""
    has_subscription = "subscription_id" in msg.DESCRIPTOR.fields_by_name
    table = {
        ("ExecutionService", "id"): owned.execution_id,
        ("ModelService", "id"): owned.model_id,
        ("ModelService", "upload_id"): owned.model_upload_id,
        ("TenantService", "tenant_id"): owned.tenant_id,
        ("WebhookService", "subscription_id"): owned.subscription_id,
        ("WebhookService", "delivery_id"): owned.delivery_id,
        ("WebhookService", "id"): owned.delivery_id if has_subscription else owned.subscription_id,
    }
    if service == "TenantService" and name == "id":
        return owned.key_id if "tenant_id" in msg.DESCRIPTOR.fields_by_name else owned.tenant_id
    return table.get((service, name))


def fill(method: descriptor.MethodDescriptor, owned: Owned) -> tuple[message.Message, bool]:
    """A request naming A's resources wherever it has an id field; whether it named one."""
    msg = message_factory.GetMessageClass(method.input_type)()
    service = method.containing_service.name
    named = _fill_ids(service, msg, owned)
    for field in msg.DESCRIPTOR.fields:
        if field.message_type is not None and field.name in ("subscription", "tenant"):
            named |= _fill_ids(service, getattr(msg, field.name), owned, nested=True)
    if method.name == "RecoverDeliveries":
        msg.since.FromSeconds(0)  # type: ignore[attr-defined]
    if method.name == "UpdateSubscription":
        msg.subscription.description = "taken over"  # type: ignore[attr-defined]
        msg.update_mask.paths.append("description")  # type: ignore[attr-defined]
    if method.name == "UpdateTenant":
        msg.tenant.max_concurrency = 1  # type: ignore[attr-defined]
    if method.name == "ResolveModels":
        msg.workflow_json = workflow_naming(MODEL_NAME)  # type: ignore[attr-defined]
    if method.containing_service.name == "EnvironmentService" and "name" in fields_of(msg):
        msg.name = "native"  # type: ignore[attr-defined]
    if method.name == "CreateEnvironment":
        msg.environment.name = "iso-b-env"  # type: ignore[attr-defined]
        msg.environment.engine = "native"  # type: ignore[attr-defined]
    return msg, named


def fields_of(msg: message.Message) -> set[str]:
    return set(msg.DESCRIPTOR.fields_by_name)


def _fill_ids(service: str, msg: message.Message, owned: Owned, nested: bool = False) -> bool:
    named = False
    for field in msg.DESCRIPTOR.fields:
        if field.type != field.TYPE_STRING or field.is_repeated:
            continue
        value = (
            (owned.subscription_id if service == "WebhookService" else owned.tenant_id)
            if nested and field.name == "id"
            else id_value(service, msg, field.name, owned)
        )
        if value:
            setattr(msg, field.name, value)
            named = True
    return named


async def call(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, request: Any, md: Metadata
) -> Any:
    """One call of any method, built from its descriptor (as the REST front builds them)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    reply_cls = message_factory.GetMessageClass(method.output_type)
    request_cls = message_factory.GetMessageClass(method.input_type)
    serialize, parse = request_cls.SerializeToString, reply_cls.FromString
    if method.server_streaming:
        stream = channel.unary_stream(
            path, request_serializer=serialize, response_deserializer=parse
        )
        return [item async for item in stream(request, metadata=md)]
    if method.client_streaming:
        upload = channel.stream_unary(
            path, request_serializer=serialize, response_deserializer=parse
        )
        return await upload(iter(request), metadata=md)
    unary = channel.unary_unary(path, request_serializer=serialize, response_deserializer=parse)
    return await unary(request, metadata=md)


def model_bytes(seed: int) -> bytes:
    weights = np.random.default_rng(seed).standard_normal((8, 8)).astype(np.float32)
    return save({"model.diffusion_model.out.weight": weights})


def upload_messages(seed: int) -> list[models_pb2.UploadModelRequest]:
    head = models_pb2.Model(name=MODEL_NAME, type=models_pb2.MODEL_TYPE_CHECKPOINT)
    return [
        models_pb2.UploadModelRequest(model=head),
        models_pb2.UploadModelRequest(chunk=model_bytes(seed)),
    ]


def start_upload_request(seed: int) -> models_pb2.StartModelUploadRequest:
    return models_pb2.StartModelUploadRequest(
        model=models_pb2.Model(name="parts.safetensors", type=models_pb2.MODEL_TYPE_LORA),
        size_bytes=len(model_bytes(seed)),
    )


@dataclass
class World:
    channel: grpc.aio.Channel
    a: Metadata
    b: Metadata
    b_token: str
    owned: Owned


async def make_tenant(channel: grpc.aio.Channel, admin: Metadata, name: str) -> tuple[str, Any]:
    tenants = [m for m in methods() if m.containing_service.name == "TenantService"]
    create = next(m for m in tenants if m.name == "CreateTenant")
    create_key = next(m for m in tenants if m.name == "CreateApiKey")
    tenant = await call(
        channel,
        create,
        tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name)),
        admin,
    )
    key_request = tenants_pb2.CreateApiKeyRequest(
        tenant_id=tenant.id, api_key=tenants_pb2.ApiKey(scopes=FULL)
    )
    return tenant.id, await call(channel, create_key, key_request, admin)


def by_name(name: str) -> descriptor.MethodDescriptor:
    return next(m for m in methods() if full_name(m).endswith(f".{name}"))


async def a_resources(
    channel: grpc.aio.Channel, a: Metadata, tenant_id: str, key_id: str, hook: str
) -> Owned:
    created = await call(
        channel,
        by_name("CreateExecution"),
        executions_pb2.CreateExecutionRequest(
            workflow_json=WORKFLOW,
            inputs=[executions_pb2.InputFile(name="shapes.png", content=PNG)],
        ),
        a,
    )

    async def succeeded() -> None:
        got = await call(
            channel, by_name("GetExecution"), executions_pb2.GetExecutionRequest(id=created.id), a
        )
        assert got.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, got.state
        assert got.outputs

    await eventually(succeeded, timeout=90)
    model = await call(channel, by_name("UploadModel"), upload_messages(1), a)
    sub = await call(
        channel,
        by_name("CreateSubscription"),
        webhooks_pb2.CreateSubscriptionRequest(subscription=webhooks_pb2.Subscription(url=hook)),
        a,
    )
    ping = await call(
        channel, by_name("PingSubscription"), webhooks_pb2.PingSubscriptionRequest(id=sub.id), a
    )
    started = await call(channel, by_name("StartModelUpload"), start_upload_request(3), a)
    return Owned(
        tenant_id,
        key_id,
        created.id,
        model.id,
        sub.id,
        ping.id,
        started.upload_id,
        started.parts[0].url,
    )


@pytest.fixture(scope="module")
async def world(platform: Platform) -> AsyncIterator[World]:
    admin = bearer(platform.admin_key)
    with webhook_receiver() as hook:
        async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
            a_tenant, a_key = await make_tenant(channel, admin, "iso-a")
            _, b_key = await make_tenant(channel, admin, "iso-b")
            a = bearer(a_key.secret)
            owned = await a_resources(channel, a, a_tenant, a_key.api_key.id, hook.url)
            yield World(channel, a, bearer(b_key.secret), b_key.secret, owned)


def rpc_code(err: grpc.aio.AioRpcError) -> str:
    return err.code().name


async def outcome(world: World, method: descriptor.MethodDescriptor, request: Any) -> Any:
    try:
        return await call(world.channel, method, request, world.b)
    except grpc.aio.AioRpcError as err:
        return err


async def test_every_method_keeps_tenant_a_out_of_reach(world: World) -> None:
    owned = world.owned
    for method in methods():
        name = full_name(method)
        kind = NOT_BY_ID.get(name)
        request, named = fill(method, owned)
        if kind is None:
            assert named, f"{name} names no resource: add it to NOT_BY_ID with its expectation"
            got = await outcome(world, method, request)
            assert isinstance(got, grpc.aio.AioRpcError), f"{name} answered B: {got}"
            assert rpc_code(got) == "NOT_FOUND", f"{name}: {rpc_code(got)} {got.details()}"
        elif kind == "list":
            got = await outcome(world, method, request)
            assert not isinstance(got, grpc.aio.AioRpcError), f"{name}: {got}"
            text = str(got)
            assert not any(i in text for i in owned.ids()), f"{name} shows A's resources to B"
        elif kind == "admin only":
            got = await outcome(world, method, request)
            assert isinstance(got, grpc.aio.AioRpcError) and rpc_code(got) == "PERMISSION_DENIED"
        elif kind == "shared":
            got = await outcome(world, method, request)
            assert not isinstance(got, grpc.aio.AioRpcError), f"{name}: {got}"
            assert got.name == "native"
        elif kind == "as if unknown":
            assert isinstance(request, models_pb2.ResolveModelsRequest)
            theirs = await outcome(world, method, request)
            unknown = models_pb2.ResolveModelsRequest(
                workflow_json=workflow_naming("nobody.safetensors")
            )
            nobody = await outcome(world, method, unknown)
            assert isinstance(theirs, grpc.aio.AioRpcError) and isinstance(
                nobody, grpc.aio.AioRpcError
            )
            assert theirs.code() == nobody.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert kind == "own", name


async def test_creates_of_b_are_b_own_even_under_a_name_a_uses(world: World) -> None:
    upload = await call(world.channel, by_name("UploadModel"), upload_messages(2), world.b)
    assert upload.version == 1 and upload.id != world.owned.model_id
    execution = await call(
        world.channel,
        by_name("CreateExecution"),
        executions_pb2.CreateExecutionRequest(
            workflow_json=WORKFLOW,
            inputs=[executions_pb2.InputFile(name="shapes.png", content=PNG)],
        ),
        world.b,
    )
    listed = await call(
        world.channel, by_name("ListExecutions"), executions_pb2.ListExecutionsRequest(), world.a
    )
    assert execution.id not in [e.id for e in listed.executions]
    assert execution.tenant != world.owned.tenant_id


def rest_path(template: str, msg: message.Message) -> str:
    """The route's path with each ``{field}`` or ``{a.b}`` taken from the request."""
    out = template
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        field_path = out[start + 1 : end].split("=")[0]
        value: Any = msg
        for part in field_path.split("."):
            value = getattr(value, part)
        out = out[:start] + str(value) + out[end + 1 :]
    return out


def rest_body(body_field: str, msg: message.Message, path_fields: tuple[str, ...]) -> bytes:
    """The body a client would send: the body field, without what the path carries."""
    if not body_field:
        return b""
    part = type(msg)()
    part.CopyFrom(msg)
    for field_path in path_fields:
        *parents, leaf = field_path.split(".")
        holder: Any = part
        for name in parents:
            holder = getattr(holder, name)
        holder.ClearField(leaf)
    chosen = part if body_field == "*" else getattr(part, body_field)
    return json_format.MessageToJson(chosen).encode()


async def test_every_rest_route_keeps_tenant_a_out_of_reach(
    world: World, platform: Platform
) -> None:
    routes = routes_of(resolve_services(PUBLIC_SERVICES))
    headers = {"Authorization": f"Bearer {world.b_token}", "Content-Type": "application/json"}
    checked = 0
    async with aiohttp.ClientSession(platform.rest_url, headers=headers) as http:
        for route in routes:
            if full_name(route.method) in NOT_BY_ID:
                continue
            request, _ = fill(route.method, world.owned)
            path = rest_path(route.template.source, request)
            async with http.request(
                route.http_method, path, data=rest_body(route.body, request, route.path_fields)
            ) as response:
                assert response.status == 404, (route.http_method, path, await response.text())
            checked += 1
    assert checked >= 15


async def test_a_resources_are_unchanged_after_the_walk(world: World) -> None:
    ch, a, owned = world.channel, world.a, world.owned
    got = await call(
        ch, by_name("GetExecution"), executions_pb2.GetExecutionRequest(id=owned.execution_id), a
    )
    assert got.state == executions_pb2.EXECUTION_STATE_SUCCEEDED
    sub = await call(
        ch,
        by_name("GetSubscription"),
        webhooks_pb2.GetSubscriptionRequest(id=owned.subscription_id),
        a,
    )
    assert sub.enabled and sub.description == ""
    deliveries = await call(
        ch,
        by_name("ListDeliveries"),
        webhooks_pb2.ListDeliveriesRequest(subscription_id=owned.subscription_id),
        a,
    )
    assert [d.id for d in deliveries.deliveries] == [owned.delivery_id]
    model = await call(ch, by_name("GetModel"), models_pb2.GetModelRequest(id=owned.model_id), a)
    assert model.version == 1
    await complete_a_upload(world)
    keys = await call(ch, by_name("ListApiKeys"), tenants_pb2.ListApiKeysRequest(tenant_id="-"), a)
    assert not any(k.HasField("revoke_time") for k in keys.api_keys)
    tenant = await call(ch, by_name("GetTenant"), tenants_pb2.GetTenantRequest(id="-"), a)
    assert tenant.max_concurrency == 0


async def complete_a_upload(world: World) -> None:
    """A's multipart upload is still open after B's tries: A sends its part and completes it."""
    blob = model_bytes(3)
    headers = {"Content-Type": "application/octet-stream"}
    url = world.owned.model_upload_url
    async with aiohttp.ClientSession() as http, http.put(url, data=blob, headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        etag = reply.headers["ETag"]
    request = models_pb2.CompleteModelUploadRequest(
        upload_id=world.owned.model_upload_id,
        parts=[models_pb2.CompletedPart(part_number=1, etag=etag)],
    )
    model = await call(world.channel, by_name("CompleteModelUpload"), request, world.a)
    assert model.sha256 == hashlib.sha256(blob).hexdigest()
    assert model.tenant == world.owned.tenant_id


def test_the_walk_covers_every_public_method() -> None:
    # Guards the test itself: each method is either walked by id or listed with a reason.
    names = {full_name(m) for m in methods()}
    assert set(NOT_BY_ID) <= names
    unnamed = [
        n for n in names - set(NOT_BY_ID) if not fill(by_name(n.rsplit(".", 1)[1]), DUMMY)[1]
    ]
    assert not unnamed, unnamed


DUMMY = Owned("ten_x", "key_x", "exe_x", "mdl_x", "sub_x", "dlv_x", "upl_x")
