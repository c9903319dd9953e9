"""The event types subscriptions may choose, and matching between filters and events.

The pattern syntax and its matching are shared (:mod:`comfyfleet.common.eventtypes`): an
execution's own ``webhook_events`` use the same, limited to execution events.
"""

from __future__ import annotations

from collections.abc import Sequence

from comfyfleet.common.errors import FieldViolation
from comfyfleet.common.eventtypes import EXECUTION_EVENT_TYPES, matches, pattern_violations

# Sent by this service about a tenant's own subscriptions, to its other subscriptions.
SUBSCRIPTION_DISABLED = "webhook.subscription_disabled"
# Sent to one subscription on request (a ping); no filter chooses it, every one receives it.
TEST_EVENT = "webhook.test"

SUBSCRIBABLE_EVENT_TYPES = (*EXECUTION_EVENT_TYPES, SUBSCRIPTION_DISABLED)


def filter_violations(patterns: Sequence[str], field: str) -> list[FieldViolation]:
    """The problems of a subscription's event type filters, one violation per bad entry."""
    return pattern_violations(patterns, field, SUBSCRIBABLE_EVENT_TYPES)


__all__ = [
    "EXECUTION_EVENT_TYPES",
    "SUBSCRIBABLE_EVENT_TYPES",
    "SUBSCRIPTION_DISABLED",
    "TEST_EVENT",
    "filter_violations",
    "matches",
]
