"""ComfyUI's HTTP and websocket protocol as plain data, with no I/O.

What the engine learns from ComfyUI passes through here: a refused ``POST /prompt`` becomes
:class:`WorkflowRejected`, websocket messages become :class:`NodeEvent`s, and a
``/history/{prompt_id}`` entry becomes an :class:`Outcome`. The message shapes are those of
ComfyUI 0.3.64 (see ``shared/comfyui/ws_trace.json``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfyfleet.common.errors import FieldViolation
from comfyfleet.workflow.graph import parse_workflow
from comfyfleet.workflow.schedule import GraphError, execution_order
from comfyfleet.workflow.validate import field_path
from services.executor.engine import NodeEvent, NodeState, OnEvent, WorkflowRejected

# The summary ComfyUI puts above node errors; the node errors say it all.
OUTPUTS_FAILED = "prompt_outputs_failed_validation"
_NODE_IN_DETAILS = re.compile(r"Node ID '#([^']+)'")


@dataclass(frozen=True, slots=True)
class OutputRef:
    """One file an output node reported: where ``GET /view`` finds it."""

    node_id: str
    kind: str
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class Outcome:
    """How a prompt ended, read from its ``/history`` entry.

    ``status`` is "success", "error" or "interrupted"; ``error`` holds the data of the
    ``execution_error`` or ``execution_interrupted`` message.
    """

    status: str
    outputs: tuple[OutputRef, ...]
    cached_nodes: tuple[str, ...]
    error: Mapping[str, Any]


def rejection(body: Any) -> WorkflowRejected:
    """The error for a ``POST /prompt`` answered 400 (``{"error": ..., "node_errors": ...}``)."""
    body = body if isinstance(body, Mapping) else {}
    violations = _node_violations(body.get("node_errors"))
    error = body.get("error")
    if not violations:
        violations = [_prompt_violation(error)]
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return WorkflowRejected(f"the workflow is invalid: {summary}", violations, body or None)


def _node_violations(node_errors: Any) -> list[FieldViolation]:
    if not isinstance(node_errors, Mapping):
        return []
    found = []
    for node_id, node in node_errors.items():
        errors = node.get("errors", []) if isinstance(node, Mapping) else []
        for error in errors:
            if isinstance(error, Mapping):
                extra = error.get("extra_info")
                name = extra.get("input_name") if isinstance(extra, Mapping) else None
                field = field_path(str(node_id), name if isinstance(name, str) else None)
                found.append(FieldViolation(field, _describe(error), str(error.get("type", ""))))
    return found


def _prompt_violation(error: Any) -> FieldViolation:
    if not isinstance(error, Mapping):
        # Older ComfyUI answers a bare string ("no prompt").
        return FieldViolation("workflow", str(error or "ComfyUI refused the workflow"))
    node = _NODE_IN_DETAILS.search(str(error.get("details", "")))
    field = field_path(node.group(1)) if node else "workflow"
    return FieldViolation(
        field, _describe(error, with_details=node is None), str(error.get("type", ""))
    )


def _describe(error: Mapping[str, Any], with_details: bool = True) -> str:
    message = str(error.get("message", "")) or "invalid"
    details = str(error.get("details", "")) if with_details else ""
    return f"{message}: {details}" if details else message


def nodes_to_run(
    prompt: Mapping[str, Any], output_classes: Collection[str], node_errors: Any
) -> tuple[str, ...]:
    """The nodes ComfyUI will execute for ``prompt``: every node its valid outputs need.

    An accepted prompt may still carry ``node_errors``: ComfyUI then runs only the outputs
    that validated (the others are named in ``dependent_outputs``).
    """
    failed: set[str] = set()
    if isinstance(node_errors, Mapping):
        for node in node_errors.values():
            if isinstance(node, Mapping):
                failed.update(str(n) for n in node.get("dependent_outputs", ()))
    workflow = parse_workflow(prompt)
    outputs = [
        node_id
        for node_id, node in workflow.nodes.items()
        if node.class_type in output_classes and node_id not in failed
    ]
    try:
        return tuple(execution_order(workflow, outputs))
    except GraphError:
        # ComfyUI accepted it, so this cannot happen; count every node rather than fail.
        return tuple(workflow.nodes)


def class_types(prompt: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(node_id): str(node.get("class_type", ""))
        for node_id, node in prompt.items()
        if isinstance(node, Mapping)
    }


class RunTracker:
    """Turns the websocket messages of one prompt into :class:`NodeEvent`s.

    A node is RUNNING from its ``executing`` message until the next ``executing`` (ComfyUI
    runs one node at a time), so that message, ``executed`` or ``execution_success`` make it
    DONE. ``executing`` with ``node: null`` ends the prompt. Messages of other prompts and
    nodes the prompt does not name (ComfyUI's expanded subgraph nodes) are ignored.
    """

    def __init__(
        self,
        prompt_id: str,
        prompt: Mapping[str, Any],
        expected: Sequence[str],
        on_event: OnEvent,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prompt_id = prompt_id
        self.expected = tuple(expected)
        self.finished = False
        self._classes = class_types(prompt)
        self._on_event = on_event
        self._clock = clock
        self._done: set[str] = set()
        self._running: str | None = None
        self._started_at = 0.0
        self._handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "execution_cached": self._cached,
            "executing": self._executing,
            "progress": self._progress,
            "executed": self._executed,
            "execution_success": lambda _: self._finish_running(),
            # The node that raised or was interrupted never finished.
            "execution_error": self._stopped,
            "execution_interrupted": self._stopped,
        }

    @property
    def nodes_done(self) -> int:
        return len(self._done)

    def feed(self, message: Mapping[str, Any]) -> None:
        """Takes one decoded websocket message (``{"type": ..., "data": ...}``)."""
        data = message.get("data")
        if not isinstance(data, Mapping):
            return
        # Old ComfyUI versions leave prompt_id out of some messages; only ours reach us.
        if data.get("prompt_id", self.prompt_id) != self.prompt_id:
            return
        handler = self._handlers.get(str(message.get("type")))
        if handler is not None:
            handler(data)

    def settle(self, outcome: Outcome) -> None:
        """Completes the counts from the history entry, for messages the stream lost.

        A successful prompt ran (or took from the cache) every node it needed; a failed one
        names the nodes that ran before it failed.
        """
        if outcome.status != "success":
            self._running = None
            for node_id in outcome.error.get("executed") or ():
                if str(node_id) in self._classes:
                    self._complete(str(node_id), NodeState.DONE)
            return
        for node_id in outcome.cached_nodes:
            if node_id in self.expected:
                self._complete(node_id, NodeState.CACHED)
        self._finish_running()
        for node_id in self.expected:
            self._complete(node_id, NodeState.DONE)

    def _cached(self, data: Mapping[str, Any]) -> None:
        # ComfyUI lists every cached node of the prompt, needed or not.
        for node_id in data.get("nodes") or ():
            if str(node_id) in self.expected:
                self._complete(str(node_id), NodeState.CACHED)

    def _executing(self, data: Mapping[str, Any]) -> None:
        node_id = data.get("node")
        if node_id is None:
            self._finish_running()
            self.finished = True
            return
        node_id = str(node_id)
        if node_id == self._running or node_id in self._done or node_id not in self._classes:
            return
        self._finish_running()
        self._running, self._started_at = node_id, self._clock()
        self._send(NodeState.RUNNING, node_id)

    def _progress(self, data: Mapping[str, Any]) -> None:
        node_id = str(data.get("node") or self._running or "")
        if node_id in self._classes:
            value, top = _int(data.get("value")), _int(data.get("max"))
            self._send(NodeState.PROGRESS, node_id, value=value, max=top)

    def _executed(self, data: Mapping[str, Any]) -> None:
        if data.get("node") is not None and str(data["node"]) == self._running:
            self._finish_running()

    def _stopped(self, data: Mapping[str, Any]) -> None:
        self._running = None

    def _finish_running(self) -> None:
        if self._running is not None:
            node_id, self._running = self._running, None
            self._complete(node_id, NodeState.DONE, seconds=self._clock() - self._started_at)

    def _complete(self, node_id: str, state: NodeState, seconds: float = 0.0) -> None:
        if node_id in self._done:
            return
        self._done.add(node_id)
        if node_id == self._running:
            self._running = None
        self._send(state, node_id, seconds=seconds)

    def _send(self, state: NodeState, node_id: str, **extra: Any) -> None:
        total = max(len(self.expected), len(self._done))
        event = NodeEvent(
            state, node_id, self._classes.get(node_id, ""), len(self._done), total, **extra
        )
        self._on_event(event)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def outcome_of(entry: Mapping[str, Any]) -> Outcome:
    """Reads one ``/history/{prompt_id}`` entry (the value under the prompt id)."""
    status = entry.get("status")
    status = status if isinstance(status, Mapping) else {}
    messages: dict[str, Mapping[str, Any]] = {}
    for item in status.get("messages") or ():
        if isinstance(item, Sequence) and len(item) == 2 and isinstance(item[1], Mapping):
            messages.setdefault(str(item[0]), item[1])
    cached = tuple(str(n) for n in messages.get("execution_cached", {}).get("nodes") or ())
    outputs = _output_refs(entry.get("outputs"))
    if "execution_error" in messages:
        return Outcome("error", outputs, cached, messages["execution_error"])
    if "execution_interrupted" in messages:
        return Outcome("interrupted", outputs, cached, messages["execution_interrupted"])
    if status.get("status_str") == "success":
        return Outcome("success", outputs, cached, {})
    return Outcome("error", outputs, cached, {"exception_message": "ComfyUI reported no result"})


def _output_refs(outputs: Any) -> tuple[OutputRef, ...]:
    """The files of each output node, in the order ComfyUI reported them.

    Outputs also carry values that are not files (text, flags); those have no filename.
    """
    refs: list[OutputRef] = []
    if not isinstance(outputs, Mapping):
        return ()
    for node_id, by_kind in outputs.items():
        if not isinstance(by_kind, Mapping):
            continue
        for kind, items in by_kind.items():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                    refs.append(
                        OutputRef(
                            str(node_id),
                            str(kind),
                            item["filename"],
                            str(item.get("subfolder") or ""),
                            str(item.get("type") or "output"),
                        )
                    )
    return tuple(refs)
