"""Event types and the patterns that choose among them, shared by every service that filters.

A pattern is an exact event type (``execution.succeeded``) or a whole category
(``execution.*``). No patterns at all means every event type. Webhook subscriptions filter
with these patterns, and so does a submitter choosing which of one execution's events go to
its tenant's webhooks: both are checked and matched by the code here.
"""

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
MAX_PATTERNS = 32


def category(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def pattern_problem(pattern: str, known: Sequence[str]) -> str | None:
    """Why ``pattern`` chooses nothing among the ``known`` event types, or None."""
    if pattern.endswith(".*"):
        categories = sorted({category(t) for t in known})
        if pattern[:-2] in categories:
            return None
        return f"unknown category {pattern[:-2]!r}; known: " + ", ".join(
            f"{c}.*" for c in categories
        )
    if pattern in known:
        return None
    return f"unknown event type {pattern!r}; known: " + ", ".join(known)


def pattern_violations(
    patterns: Sequence[str], field: str, known: Sequence[str]
) -> list[FieldViolation]:
    """The problems of a list of patterns, one violation per bad entry (``field[i]``)."""
    if len(patterns) > MAX_PATTERNS:
        return [FieldViolation(field, f"at most {MAX_PATTERNS} event types")]
    out = []
    seen: set[str] = set()
    for i, pattern in enumerate(patterns):
        problem = pattern_problem(pattern, known)
        if problem is None and pattern in seen:
            problem = f"{pattern!r} is listed twice"
        seen.add(pattern)
        if problem:
            out.append(FieldViolation(f"{field}[{i}]", problem))
    return out


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether these patterns choose events of ``event_type``; no patterns choose all."""
    if not patterns:
        return True
    return event_type in patterns or f"{category(event_type)}.*" in patterns
