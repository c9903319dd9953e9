"""The JSON bodies deliveries carry, in Standard Webhooks' recommended shape.

``{"type": ..., "timestamp": ..., "data": {...}}``: the event type, when the event happened
(RFC 3339), and the event itself. Execution events are rendered with the proto3 JSON
mapping, so a receiver sees the same field names as a REST client of the public API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from comfyfleet.executions.v1 import executions_pb2


@dataclass(frozen=True)
class Event:
    """Something to deliver to a tenant's matching subscriptions."""

    event_id: str
    tenant: str
    event_type: str
    body: str
    # The trace it belongs to (W3C traceparent, from the message headers); "" when untraced.
    traceparent: str = ""
    # The event types its execution lets go to webhooks (patterns); empty: every type.
    # A subscription receives the event only when its own filter also chooses it.
    allowed: tuple[str, ...] = ()


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def body(event_type: str, timestamp: str, data: Mapping[str, Any]) -> str:
    """A delivery body, compact: the exact text is what gets signed."""
    return json.dumps(
        {"type": event_type, "timestamp": timestamp, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def execution_event(event: executions_pb2.WorkflowExecutionEvent, now: datetime) -> Event:
    """The delivery content of an execution event; ``now`` stands in for a missing time."""
    when = event.timestamp.ToJsonString() if event.HasField("timestamp") else _rfc3339(now)
    data = json_format.MessageToDict(event)
    return Event(
        event.event_id,
        event.tenant,
        event.event_type,
        body(event.event_type, when, data),
        allowed=tuple(event.webhook_events),
    )


def service_event(
    event_id: str, tenant: str, event_type: str, when: datetime, data: Mapping[str, Any]
) -> Event:
    """An event this service raises itself, such as a ping or a disabled subscription."""
    return Event(event_id, tenant, event_type, body(event_type, _rfc3339(when), data))
