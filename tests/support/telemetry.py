"""OpenTelemetry in the test process: spans kept in memory, metrics rendered as Prometheus text.

The providers are global and can be installed once per process, so the first test that asks
installs them for the rest of the session: later spans are kept too (the most recent ones
only), and tests find theirs by trace id or by clearing first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

KEEP_SPANS = 20_000


class RecentSpans(SpanExporter):
    """Finished spans, the last ``KEEP_SPANS`` of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: deque[ReadableSpan] = deque(maxlen=KEEP_SPANS)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def spans(self) -> list[ReadableSpan]:
        with self._lock:
            return list(self._spans)

    def in_trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.context is not None and s.context.trace_id == trace_id]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()


@dataclass(frozen=True)
class InProcessTelemetry:
    spans: RecentSpans
    registry: CollectorRegistry

    def exposition(self) -> str:
        """The metrics as a /metrics endpoint would serve them."""
        return generate_latest(self.registry).decode()

    def samples(self, name: str, **labels: str) -> list[float]:
        """The values of the samples called ``name`` whose labels include ``labels``."""
        return [
            sample.value
            for family in text_string_to_metric_families(self.exposition())
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``; 0 if none."""
        return sum(self.samples(name, **labels))


_installed: InProcessTelemetry | None = None
_lock = threading.Lock()


def installed_telemetry() -> InProcessTelemetry:
    """The process's providers, installed on first use."""
    global _installed
    with _lock:
        if _installed is None:
            _installed = _install()
        return _installed


def _install() -> InProcessTelemetry:
    resource = Resource.create({"service.name": "tests"})
    spans = RecentSpans()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=resource))
    return InProcessTelemetry(spans, registry)
