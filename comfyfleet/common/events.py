"""The execution event stream on NATS JetStream: one stream, one subject per execution."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from opentelemetry.trace import SpanKind

from comfyfleet.common.config import NatsConfig
from comfyfleet.common.telemetry import current_traceparent, headers_with_trace, span_in
from comfyfleet.executions.v1 import executions_pb2

CONTENT_TYPE = "application/x-protobuf; messageType=comfyfleet.executions.v1.WorkflowExecutionEvent"
DAY_S = 24 * 3600


@dataclass
class EventBus:
    """A JetStream connection that knows the execution event stream."""

    nc: NatsClient
    js: JetStreamContext
    cfg: NatsConfig

    def subject(self, tenant: str, execution_id: str) -> str:
        return f"{self.cfg.subject_prefix}.{tenant}.{execution_id}"

    def all_subjects(self) -> str:
        return f"{self.cfg.subject_prefix}.>"

    async def ensure_stream(
        self, *, max_age_s: float = 7 * DAY_S, max_bytes: int = 1 << 30
    ) -> None:
        """Creates the stream when missing: file storage, bounded by age and size, and a
        duplicate window that makes a re-published event (same Nats-Msg-Id) a no-op."""
        config = StreamConfig(
            name=self.cfg.stream,
            subjects=[self.all_subjects()],
            storage=StorageType.FILE,
            max_age=max_age_s,
            max_bytes=max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=120.0,
        )
        try:
            await self.js.stream_info(self.cfg.stream)
        except NotFoundError:
            await self.js.add_stream(config)

    async def publish(
        self, event: executions_pb2.WorkflowExecutionEvent, *, traceparent: str = ""
    ) -> None:
        """Publishes one event; JetStream drops a copy it has already seen by event id.

        ``traceparent`` names the trace the event belongs to (its execution's): the publish
        is a span of that trace, and its context goes along in the ``traceparent`` header
        so consumers continue it. Without one, the current trace (if any) goes along.
        """
        subject = self.subject(event.tenant, event.execution_id)
        headers = {"Nats-Msg-Id": event.event_id, "Content-Type": CONTENT_TYPE}
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.message.id": event.event_id,
            "comfyfleet.event_type": event.event_type,
        }
        span = (
            span_in(
                traceparent,
                f"publish {self.cfg.subject_prefix}",
                kind=SpanKind.PRODUCER,
                attributes=attributes,
            )
            if traceparent
            else nullcontext()
        )
        with span:
            headers = headers_with_trace(headers, current_traceparent())
            await self.js.publish(subject, event.SerializeToString(), headers=headers)


def decode_event(data: bytes) -> executions_pb2.WorkflowExecutionEvent:
    event = executions_pb2.WorkflowExecutionEvent()
    event.ParseFromString(data)
    return event


@asynccontextmanager
async def connect_bus(cfg: NatsConfig, *, name: str) -> AsyncIterator[EventBus]:
    """Connects, ensures the stream, and drains the connection on exit."""
    nc = await nats.connect(cfg.url, name=name, max_reconnect_attempts=-1)
    bus = EventBus(nc, nc.jetstream(), cfg)
    try:
        await bus.ensure_stream()
        yield bus
    finally:
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
