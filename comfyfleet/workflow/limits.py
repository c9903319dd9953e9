"""The documented limits of a submitted workflow, checked before anything else reads it.

How large, deep or odd a workflow's JSON is, is the client's choice. These limits bound the
work one request can cause, and refuse values that no service could carry or store: NUL and
lone surrogates (PostgreSQL text, UTF-8), NaN and infinities (JSON), integers beyond 64 bits
(protobuf, PostgreSQL, torch). Each offending value is one violation naming its field, as
validation does (``workflow["3"].inputs.text``), whichever request field carried the workflow.

=====================================  ==========================================
limit                                  default
=====================================  ==========================================
nodes                                  10,000
nesting depth                          32 levels: the workflow object is level 1,
                                       a node 2, its ``inputs`` 3
characters in a string or object key   65,536
integers                               -2^63 to 2^64 - 1 (int64 and uint64: seeds)
other numbers                          finite (no NaN, Infinity or -Infinity)
=====================================  ==========================================

JSON text nested too deeply for the decoder to read at all is the depth violation too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from comfyfleet.workflow.validate import FieldViolation

ROOT = "workflow"


class LimitReason(StrEnum):
    """The ``reason`` of each kind of violation."""

    TOO_MANY_NODES = "TOO_MANY_NODES"
    NESTED_TOO_DEEP = "NESTED_TOO_DEEP"
    STRING_TOO_LONG = "STRING_TOO_LONG"
    INVALID_TEXT = "INVALID_TEXT"
    INTEGER_OUT_OF_RANGE = "INTEGER_OUT_OF_RANGE"
    NUMBER_NOT_FINITE = "NUMBER_NOT_FINITE"


@dataclass(frozen=True)
class WorkflowLimits:
    """What one submitted workflow may hold (the module's table says why)."""

    max_nodes: int = 10_000
    max_depth: int = 32
    max_string_chars: int = 65_536
    min_int: int = -(2**63)
    max_int: int = 2**64 - 1
    # The check stops after this many violations: one per bad value could be millions.
    max_violations: int = 100

    def load(self, text: str | bytes) -> tuple[Any, list[FieldViolation]]:
        """The decoded workflow and its violations of these limits.

        Text that is not JSON comes back as ``None`` without violations: validation reports
        it the way ComfyUI does.
        """
        try:
            value = json.loads(text)
        except RecursionError:
            return None, [self._too_deep(ROOT)]
        except ValueError:
            return None, []
        return value, self.violations(value)

    def violations(self, workflow: Any) -> list[FieldViolation]:
        """Every value of ``workflow`` (decoded JSON) beyond these limits, in document order,
        up to ``max_violations``."""
        found: list[FieldViolation] = []
        if isinstance(workflow, dict) and len(workflow) > self.max_nodes:
            found.append(
                FieldViolation(
                    ROOT,
                    f"has {len(workflow)} nodes; at most {self.max_nodes} are taken",
                    LimitReason.TOO_MANY_NODES,
                )
            )
        # (value, its path, its depth, whether the value is an object key naming the path)
        stack: list[tuple[Any, str, int, bool]] = [(workflow, ROOT, 1, False)]
        while stack and len(found) < self.max_violations:
            value, path, depth, is_key = stack.pop()
            if isinstance(value, dict | list):
                if depth > self.max_depth:
                    found.append(self._too_deep(path))
                else:
                    stack.extend(_children(value, path, depth))
                continue
            problem = self._scalar_problem(value)
            if problem is not None:
                text, reason = problem
                found.append(FieldViolation(path, f"the name {text}" if is_key else text, reason))
        return found[: self.max_violations]

    def _scalar_problem(self, value: Any) -> tuple[str, LimitReason] | None:
        if isinstance(value, str):
            return self._text_problem(value)
        if isinstance(value, bool):
            return None
        if isinstance(value, int) and not self.min_int <= value <= self.max_int:
            return (
                f"is an integer outside {self.min_int} to {self.max_int}",
                LimitReason.INTEGER_OUT_OF_RANGE,
            )
        if isinstance(value, float) and not math.isfinite(value):
            return f"is {value}, which is not a finite number", LimitReason.NUMBER_NOT_FINITE
        return None

    def _text_problem(self, text: str) -> tuple[str, LimitReason] | None:
        if len(text) > self.max_string_chars:
            return (
                f"has {len(text)} characters; at most {self.max_string_chars} are taken",
                LimitReason.STRING_TOO_LONG,
            )
        if "\x00" in text:
            return "contains a NUL character (U+0000)", LimitReason.INVALID_TEXT
        if not text.isascii() and _LONE_SURROGATE.search(text):
            return (
                "contains a lone surrogate (U+D800 to U+DFFF), which is not Unicode text",
                LimitReason.INVALID_TEXT,
            )
        return None

    def _too_deep(self, path: str) -> FieldViolation:
        return FieldViolation(
            path, f"is nested more than {self.max_depth} levels deep", LimitReason.NESTED_TOO_DEEP
        )


WORKFLOW_LIMITS = WorkflowLimits()
"""The limits the gateway applies to every submitted workflow."""

# A str holds a surrogate only when it did not come from valid UTF-8 (a JSON "\ud800").
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Keys longer than this are shortened in field paths (the violation says what is wrong).
_PATH_KEY_CHARS = 64


def _children(
    value: dict[str, Any] | list[Any], path: str, depth: int
) -> list[tuple[Any, str, int, bool]]:
    """A container's keys and values to check, last first (the stack pops the first)."""
    if isinstance(value, list):
        return [(v, f"{path}[{i}]", depth + 1, False) for i, v in reversed(list(enumerate(value)))]
    children: list[tuple[Any, str, int, bool]] = []
    for key, child in value.items():
        child_path = _child_path(path, key, depth)
        children += [(key, child_path, depth, True), (child, child_path, depth + 1, False)]
    children.reverse()
    return children


def _child_path(path: str, key: str, depth: int) -> str:
    """``workflow["3"]``, ``workflow["3"].inputs``, ``...inputs["odd name"]``: the form of
    :func:`comfyfleet.workflow.validate.field_path`, continued below the inputs."""
    if len(key) > _PATH_KEY_CHARS:
        key = key[:_PATH_KEY_CHARS] + "…"
    elif depth > 1 and _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
