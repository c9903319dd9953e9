"""An OTLP/gRPC trace receiver for tests: what services export, kept as plain records."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

# OTLP's span kinds, by number.
KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass(frozen=True)
class SpanRecord:
    service: str
    trace_id: str
    span_id: str
    # "" for a span that starts its trace.
    parent_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    failed: bool


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclass
class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    endpoint: str = ""
    _spans: list[SpanRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        records = [
            self._record(_attributes(rs.resource.attributes).get("service.name", ""), span)
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
        with self._lock:
            self._spans.extend(records)
        return trace_service_pb2.ExportTraceServiceResponse()

    @staticmethod
    def _record(service: str, span: trace_pb2.Span) -> SpanRecord:
        return SpanRecord(
            service=service,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_id=span.parent_span_id.hex(),
            name=span.name,
            kind=KINDS.get(span.kind, "unspecified"),
            attributes=_attributes(span.attributes),
            failed=span.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
        )

    def trace(self, trace_id: str) -> list[SpanRecord]:
        with self._lock:
            return [s for s in self._spans if s.trace_id == trace_id]


@contextmanager
def trace_receiver() -> Iterator[TraceReceiver]:
    """Receives OTLP over gRPC on a free loopback port; ``endpoint`` is its http:// URL."""
    receiver = TraceReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(grace=None)
