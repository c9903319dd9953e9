"""Event types, the filters subscriptions choose them with, and matching between the two."""

from __future__ import annotations

from collections.abc import Sequence

from comfyfleet.common.errors import FieldViolation

EXECUTION_EVENT_TYPES = (
    "execution.queued",
    "execution.dispatched",
    "execution.running",
    "execution.progress",
    "execution.retrying",
    "execution.succeeded",
    "execution.failed",
    "execution.cancelled",
)
# Sent by this service about a tenant's own subscriptions, to its other subscriptions.
SUBSCRIPTION_DISABLED = "webhook.subscription_disabled"
# Sent to one subscription on request (a ping); no filter chooses it, every one receives it.
TEST_EVENT = "webhook.test"

SUBSCRIBABLE_EVENT_TYPES = (*EXECUTION_EVENT_TYPES, SUBSCRIPTION_DISABLED)
_CATEGORIES = sorted({t.split(".", 1)[0] for t in SUBSCRIBABLE_EVENT_TYPES})
MAX_FILTERS = 32


def _category(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def filter_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid filter, or None: an exact type or ``<category>.*``."""
    if pattern.endswith(".*"):
        if pattern[:-2] in _CATEGORIES:
            return None
        return f"unknown category {pattern[:-2]!r}; known: " + ", ".join(
            f"{c}.*" for c in _CATEGORIES
        )
    if pattern in SUBSCRIBABLE_EVENT_TYPES:
        return None
    return f"unknown event type {pattern!r}; known: " + ", ".join(SUBSCRIBABLE_EVENT_TYPES)


def filter_violations(patterns: Sequence[str], field: str) -> list[FieldViolation]:
    """The problems of a subscription's event type filters, one violation per bad entry."""
    if len(patterns) > MAX_FILTERS:
        return [FieldViolation(field, f"at most {MAX_FILTERS} event types")]
    out = []
    seen: set[str] = set()
    for i, pattern in enumerate(patterns):
        problem = filter_problem(pattern)
        if problem is None and pattern in seen:
            problem = f"{pattern!r} is listed twice"
        seen.add(pattern)
        if problem:
            out.append(FieldViolation(f"{field}[{i}]", problem))
    return out


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether a subscription with these filters wants events of ``event_type``.

    No filters means every event type.
    """
    if not patterns:
        return True
    return event_type in patterns or f"{_category(event_type)}.*" in patterns
