"""The overview's webhook summary: recent deliveries counted by state, the newest trouble kept."""

from __future__ import annotations

from comfyfleet.webhooks.v1 import webhooks_pb2
from services.gateway.operations import summarize

STATE = webhooks_pb2.DeliveryState


def delivery(state: int, error: str = "") -> webhooks_pb2.Delivery:
    return webhooks_pb2.Delivery(state=state, last_error=error)  # type: ignore[arg-type]


def test_deliveries_are_counted_by_state_and_the_newest_error_is_kept() -> None:
    sub = webhooks_pb2.Subscription(id="sub_1", url="https://x.example/h", enabled=True)
    newest_first = [
        delivery(STATE.DELIVERY_STATE_SUCCEEDED),
        delivery(STATE.DELIVERY_STATE_PENDING, "connection refused"),
        delivery(STATE.DELIVERY_STATE_FAILED, "HTTP 500"),
        delivery(STATE.DELIVERY_STATE_SUCCEEDED),
    ]
    summary = summarize("ten_a", sub, newest_first)
    assert (summary.recent_deliveries, summary.succeeded, summary.failed, summary.pending) == (
        4,
        2,
        1,
        1,
    )
    assert summary.last_error == "connection refused"
    assert (summary.tenant, summary.subscription_id, summary.enabled) == ("ten_a", "sub_1", True)


def test_a_quiet_subscription_has_no_error() -> None:
    summary = summarize("ten_a", webhooks_pb2.Subscription(id="sub_2"), [])
    assert (summary.recent_deliveries, summary.last_error) == (0, "")
