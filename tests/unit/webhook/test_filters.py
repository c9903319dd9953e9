"""Event type filters: which are valid, and what they match."""

from __future__ import annotations

import pytest

from services.webhook.filters import filter_violations, matches


@pytest.mark.parametrize(
    ("patterns", "event_type", "wanted"),
    [
        ((), "execution.succeeded", True),
        ((), "webhook.subscription_disabled", True),
        (("execution.succeeded",), "execution.succeeded", True),
        (("execution.succeeded",), "execution.failed", False),
        (("execution.*",), "execution.progress", True),
        (("execution.*",), "webhook.subscription_disabled", False),
        (("webhook.*", "execution.failed"), "execution.failed", True),
        (("webhook.*",), "webhook.subscription_disabled", True),
    ],
)
def test_matches(patterns: tuple[str, ...], event_type: str, wanted: bool) -> None:
    assert matches(patterns, event_type) is wanted


def test_valid_filters_have_no_violations() -> None:
    assert filter_violations(["execution.succeeded", "execution.*", "webhook.*"], "f") == []
    assert filter_violations([], "f") == []


def test_each_bad_filter_is_named_by_its_index() -> None:
    found = filter_violations(
        ["execution.succeeded", "execution.exploded", "*", "billing.*", "execution.succeeded"],
        "subscription.event_types",
    )
    assert [v.field for v in found] == [
        "subscription.event_types[1]",
        "subscription.event_types[2]",
        "subscription.event_types[3]",
        "subscription.event_types[4]",
    ]
    assert "execution.exploded" in found[0].description
    assert "twice" in found[3].description


def test_too_many_filters() -> None:
    found = filter_violations(["execution.succeeded"] * 40, "f")
    assert len(found) == 1 and found[0].field == "f"
