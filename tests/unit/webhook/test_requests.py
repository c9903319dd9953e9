"""Validation of what clients send: URLs, update masks, page tokens; and the body shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf import field_mask_pb2

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.errors import InvalidArgument
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.webhooks.v1 import webhooks_pb2
from services.webhook.paging import MAX_PAGE_SIZE, Page, decode_token, encode_token, page_size
from services.webhook.payload import execution_event
from services.webhook.servicer import update_changes
from services.webhook.subscriptions import field_violations, url_problem

STRICT = AddressPolicy()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/in", None),
        ("http://example.com:8080/x?y=1", None),
        ("", "required"),
        ("ftp://example.com/", "http"),
        ("example.com/hook", "http"),
        ("https:///nohost", "host"),
        ("https://example.com:99999/", "Port"),
        ("https://exa mple.com/", "spaces"),
        ("http://127.0.0.1:8000/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("https://example.com/" + "a" * 3000, "2048"),
    ],
)
def test_url_problems(url: str, problem: str | None) -> None:
    found = url_problem(url, STRICT)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_loopback_urls_pass_when_allowed() -> None:
    assert url_problem("http://127.0.0.1:8000/", AddressPolicy(allow_loopback=True)) is None


def test_field_violations_name_each_field() -> None:
    found = field_violations(
        {"url": "nope", "event_types": ("execution.nope",), "description": "d" * 5000},
        STRICT,
        "subscription",
    )
    assert [v.field for v in found] == [
        "subscription.url",
        "subscription.event_types[0]",
        "subscription.description",
    ]


def _update(mask: list[str], **sub: object) -> webhooks_pb2.UpdateSubscriptionRequest:
    return webhooks_pb2.UpdateSubscriptionRequest(
        subscription=webhooks_pb2.Subscription(id="sub_1", **sub),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=mask),
    )


def test_an_update_mask_picks_the_fields() -> None:
    assert update_changes(_update(["enabled"], url="https://x.example")) == {"enabled": False}


def test_without_a_mask_the_set_fields_change() -> None:
    changes = update_changes(_update([], description="d", event_types=["execution.*"]))
    assert changes == {"event_types": ("execution.*",), "description": "d"}


def test_unknown_mask_paths_are_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        update_changes(_update(["enabled", "secret"]))
    assert [v.field for v in err.value.violations] == ["update_mask.paths[1]"]


def test_page_tokens_round_trip_and_stay_in_their_list() -> None:
    token = encode_token("sub_123", "subscriptions:t1")
    assert decode_token(token, "subscriptions:t1") == "sub_123"
    with pytest.raises(InvalidArgument):
        decode_token(token, "subscriptions:t2")
    with pytest.raises(InvalidArgument):
        decode_token("garbage!!", "subscriptions:t1")


def test_page_sizes() -> None:
    assert page_size(0) == 50
    assert page_size(7) == 7
    assert page_size(10**6) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_next_token_only_when_an_extra_row_came() -> None:
    page = Page.of(2, "", "s")
    assert page.next_token(["a", "b"]) == ""
    assert decode_token(page.next_token(["a", "b", "c"]), "s") == "b"


def test_execution_event_body_is_standard_webhooks_shaped() -> None:
    event = executions_pb2.WorkflowExecutionEvent(
        event_id="evt_1",
        execution_id="exe_1",
        event_type="execution.succeeded",
        tenant="t1",
        output_urls=["https://s3/x.png"],
        sequence=4,
    )
    event.timestamp.FromDatetime(datetime(2025, 5, 1, 12, 0, tzinfo=UTC))
    made = execution_event(event, datetime.now(UTC))
    body = json.loads(made.body)
    assert body["type"] == "execution.succeeded"
    assert body["timestamp"] == "2025-05-01T12:00:00Z"
    assert body["data"]["executionId"] == "exe_1"
    assert body["data"]["outputUrls"] == ["https://s3/x.png"]
    assert body["data"]["sequence"] == "4"  # int64 is a string in proto3 JSON
    assert (made.event_id, made.tenant, made.event_type) == ("evt_1", "t1", "execution.succeeded")


def test_an_event_without_a_time_takes_the_time_it_was_read() -> None:
    event = executions_pb2.WorkflowExecutionEvent(event_id="e", tenant="t", event_type="x.y")
    made = execution_event(event, datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert json.loads(made.body)["timestamp"] == "2025-01-02T03:04:05Z"
