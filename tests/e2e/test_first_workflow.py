"""The foundation's path: a workflow travels gateway → scheduler → executor → S3 → JetStream
→ webhook, and the client gets outputs equal to what ComfyUI produced."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request

import grpc
import nats
import numpy as np
import pytest
from PIL import Image
from standardwebhooks import Webhook

from comfyfleet.common.events import decode_event
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk import ApiError, AsyncClient, Settings
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.e2e.conftest import Platform
from tests.e2e.receiver import webhook_receiver
from tests.support import eventually
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
TERMINAL_TYPES = {"execution.succeeded", "execution.failed", "execution.cancelled"}


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return bytes(response.read())


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


async def new_tenant_key(platform: Platform, name: str) -> str:
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = tenants_pb2_grpc.TenantServiceStub(channel)
        admin = (("authorization", f"Bearer {platform.admin_key}"),)
        tenant = await stub.CreateTenant(
            tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name)), metadata=admin
        )
        created = await stub.CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=admin
        )
        return created.secret


async def subscribe(platform: Platform, key: str, url: str) -> webhooks_pb2.Subscription:
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = webhooks_pb2_grpc.WebhookServiceStub(channel)
        request = webhooks_pb2.CreateSubscriptionRequest(
            subscription=webhooks_pb2.Subscription(url=url, event_types=["execution.*"])
        )
        return await stub.CreateSubscription(
            request, metadata=(("authorization", f"Bearer {key}"),)
        )


async def stream_events(
    platform: Platform, execution_id: str
) -> list[tuple[str, executions_pb2.WorkflowExecutionEvent]]:
    """Every message of the execution in the JetStream stream, with its Nats-Msg-Id."""
    nc = await nats.connect(platform.env["COMFYFLEET_NATS_URL"])
    try:
        js = nc.jetstream()
        prefix = platform.env["COMFYFLEET_NATS_SUBJECT_PREFIX"]
        sub = await js.subscribe(f"{prefix}.*.{execution_id}", ordered_consumer=True)
        found = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                break
            found.append(((msg.headers or {}).get("Nats-Msg-Id", ""), decode_event(msg.data)))
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


async def test_r01_travels_the_whole_platform(platform: Platform) -> None:
    key = await new_tenant_key(platform, "acme")
    workflow = (REF / "workflows" / "r01_invert.json").read_text()
    shapes = (REF / "inputs" / "shapes.png").read_bytes()
    with webhook_receiver() as receiver:
        subscription = await subscribe(platform, key, receiver.url)
        assert subscription.secret.startswith("whsec_")
        async with AsyncClient(Settings(platform.addrs.gateway, key)) as client:
            execution = await client.submit(workflow, {"shapes.png": shapes})
            assert execution.state == executions_pb2.EXECUTION_STATE_QUEUED
            done = await client.wait(execution.id)
        assert done.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, done.error
        assert len(done.outputs) == 1
        produced = await asyncio.to_thread(fetch, done.outputs[0].url)
        reference = (REF / "reference" / "r01_invert" / "node3_images_0.png").read_bytes()
        diff = np.abs(pixels(produced) - pixels(reference))
        assert diff.max() <= 1

        events = await stream_events(platform, execution.id)
        ids = [msg_id for msg_id, _ in events]
        assert ids == [e.event_id for _, e in events]
        assert len(set(ids)) == len(ids)
        types = [e.event_type for _, e in events]
        assert types[0] == "execution.queued"
        assert [t for t in types if t in TERMINAL_TYPES] == ["execution.succeeded"]
        assert [e.sequence for _, e in events] == list(range(1, len(events) + 1))

        async def all_delivered() -> None:
            delivered = {json.loads(r.body)["data"]["eventId"] for r in receiver.requests}
            assert set(ids) <= delivered

        await eventually(all_delivered, timeout=30)
        verifier = Webhook(subscription.secret)
        for request in receiver.requests:
            verifier.verify(request.body, request.headers)
            assert request.headers["webhook-id"]


async def test_bad_workflows_are_refused_and_nothing_is_stored(platform: Platform) -> None:
    key = await new_tenant_key(platform, "bad-input")
    async with AsyncClient(Settings(platform.addrs.gateway, key)) as client:
        for name in [
            "invalid_unknown_class.json",
            "invalid_missing_link.json",
            "invalid_wrong_value_type.json",
            "invalid_no_outputs.json",
        ]:
            with pytest.raises(ApiError) as caught:
                await client.submit((REF / "workflows" / name).read_text())
            assert caught.value.code == "INVALID_ARGUMENT", name
            assert "workflow" in str(caught.value)
        with pytest.raises(ApiError) as malformed:
            await client.submit("{not json")
        assert malformed.value.code == "INVALID_ARGUMENT"
        listed = await client.list_executions()
        assert list(listed.executions) == []


async def test_no_key_is_unauthenticated(platform: Platform) -> None:
    async with AsyncClient(Settings(platform.addrs.gateway, None)) as client:
        with pytest.raises(ApiError) as caught:
            await client.submit((REF / "workflows" / "a_tiny.json").read_text())
    assert caught.value.code == "UNAUTHENTICATED"
