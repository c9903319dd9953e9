"""An executor attempt's telemetry: its span, one span per node under it, and its metrics.

The attempt's span is a child of the Execute call's (or the RunPod job's) span; node spans are
children of the attempt's, however late their events arrive.
"""

from __future__ import annotations

import time

from google.rpc import code_pb2
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from comfyfleet.common import metrics
from comfyfleet.common.errors import ComfyfleetError
from comfyfleet.common.telemetry import tracer


class AttemptTelemetry:
    """An attempt's span, its nodes' spans and its metrics.

    Made where the attempt starts (inside the Execute call's span, whose child it is), it
    keeps its context: node events arrive later, from the engine's thread by way of the
    event loop, where the current context is no longer the call's.
    """

    def __init__(self, execution_id: str, attempt: int) -> None:
        self._attributes: dict[str, str | int | bool] = {
            "comfyfleet.execution_id": execution_id,
            "comfyfleet.attempt": attempt,
        }
        self._span = tracer.start_span("executor attempt", attributes=self._attributes)
        self._context = trace.set_span_in_context(self._span)
        self._nodes: dict[str, Span] = {}
        self._started = time.perf_counter()
        self._done = False

    def node(self, node_id: str, class_type: str, state: str) -> None:
        """A node event: "running" opens the node's span, "done" closes it, "cached" is a
        span of its own that ran nothing; progress adds nothing."""
        if self._done:
            return  # an engine that ignored its cancel: the attempt was already reported
        if state == "running":
            self._nodes[node_id] = self._node_span(node_id, class_type, cached=False)
        elif state == "done":
            span = self._nodes.pop(node_id, None)
            if span is not None:
                span.end()
        elif state == "cached":
            self._node_span(node_id, class_type, cached=True).end()

    def _node_span(self, node_id: str, class_type: str, *, cached: bool) -> Span:
        attributes: dict[str, str | int | bool] = {
            **self._attributes,
            "comfyfleet.node_id": node_id,
            "comfyfleet.node_type": class_type,
            "comfyfleet.node_cached": cached,
        }
        return tracer.start_span(f"node {class_type}", context=self._context, attributes=attributes)

    def models_ready(self, seconds: float, count: int) -> None:
        """The attempt's ``count`` models became usable after ``seconds``."""
        if count:
            metrics.models_loaded(seconds)

    def finished(self, error: ComfyfleetError | None) -> None:
        """The attempt ended, with ``error`` unless it succeeded: node spans still open end
        with it (failed, when it failed), and its duration is counted by outcome."""
        self._done = True
        for span in [*self._nodes.values(), self._span]:
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error.message))
            span.end()
        self._nodes.clear()
        metrics.attempt_finished(_outcome(error), time.perf_counter() - self._started)


def _outcome(error: ComfyfleetError | None) -> str:
    if error is None:
        return "succeeded"
    return "cancelled" if error.code == code_pb2.CANCELLED else "failed"
