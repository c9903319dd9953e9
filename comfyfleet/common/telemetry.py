"""OpenTelemetry for every service: set up once per process, carried across every hop.

``setup_telemetry(service, TelemetryConfig.from_env())`` in a service's ``__main__`` installs
the tracer and meter providers. Where traces go follows the standard variables:
``OTEL_TRACES_EXPORTER`` (otlp, console or none; otlp by default when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, none otherwise), ``OTEL_EXPORTER_OTLP_PROTOCOL``
(grpc or http/protobuf) and the exporters' own ``OTEL_EXPORTER_OTLP_*``; metrics likewise with
``OTEL_METRICS_EXPORTER``. ``COMFYFLEET_METRICS_ADDR`` (host:port) serves ``/metrics`` for
Prometheus as well. With nothing set, no provider is installed and spans cost nothing.

The trace context travels as W3C ``traceparent``: in gRPC metadata (the interceptors that
``grpcserver.serve()`` and ``grpcserver.channel()`` install), in NATS headers (the event bus),
and in the rows that carry work across time (an execution, its outbox, a webhook delivery),
so that one execution is one trace from the API call to its last webhook.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from comfyfleet.common import metrics
from comfyfleet.common.config import ConfigError, env_str

log = logging.getLogger(__name__)

T = TypeVar("T")

TRACEPARENT = "traceparent"
EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")
# Calls that say nothing about the work: probes and tooling, made all the time.
UNTRACED_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

tracer = trace.get_tracer("comfyfleet")


# --- configuration and setup ----------------------------------------------------------------


def _exporter(signal: str, otlp_configured: bool) -> str:
    name = os.environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if not name:
        return "otlp" if otlp_configured else "none"
    if name not in EXPORTERS:
        raise ConfigError(f"OTEL_{signal}_EXPORTER={name!r}: choose one of {', '.join(EXPORTERS)}")
    return name


@dataclass(frozen=True)
class TelemetryConfig:
    """Where a process's traces and metrics go."""

    traces_exporter: str = "none"
    metrics_exporter: str = "none"
    otlp_protocol: str = "grpc"
    # "host:port" to serve /metrics on (port 0 picks one); "" for none.
    metrics_addr: str = ""
    # OTEL_SERVICE_NAME, when set, names the service instead of the code's own name.
    service_name: str = ""

    @classmethod
    def from_env(cls) -> TelemetryConfig:
        otlp = any(
            os.environ.get(f"OTEL_EXPORTER_OTLP{s}ENDPOINT") for s in ("_", "_TRACES_", "_METRICS_")
        )
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip() or "grpc"
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: choose one of {', '.join(PROTOCOLS)}"
            )
        metrics_addr = env_str("METRICS_ADDR", "")
        if metrics_addr:
            _split_addr(metrics_addr)
        return cls(
            traces_exporter=_exporter("TRACES", otlp),
            metrics_exporter=_exporter("METRICS", otlp),
            otlp_protocol=protocol,
            metrics_addr=metrics_addr,
            service_name=os.environ.get("OTEL_SERVICE_NAME", ""),
        )


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"COMFYFLEET_METRICS_ADDR={addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Telemetry:
    """The providers a process installed, and its /metrics server if it serves one."""

    tracer_provider: Any = None
    meter_provider: Any = None
    metrics_server: Any = None
    metrics_port: int = 0
    _closers: list[Callable[[], object]] = field(default_factory=list)

    def shutdown(self) -> None:
        """Flushes what is buffered and stops the exporters and the /metrics server."""
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                log.exception("stopping telemetry failed")
        self._closers.clear()


def build_telemetry(service: str, cfg: TelemetryConfig, span_exporter: Any = None) -> Telemetry:
    """The providers ``cfg`` asks for, not installed; ``span_exporter`` (tests: an in-memory
    one) is added with a synchronous processor so a finished span is there at once."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    # The instance is the host (a pod's or container's name) unless OTEL_RESOURCE_ATTRIBUTES
    # names one: the same across restarts of a container, so its series continue.
    named = OTELResourceDetector().detect().attributes.get("service.instance.id")
    resource = Resource.create(
        {
            "service.name": cfg.service_name or service,
            "service.namespace": "comfyfleet",
            "service.instance.id": str(named or socket.gethostname()),
        }
    )
    built = Telemetry()
    if cfg.traces_exporter != "none" or span_exporter is not None:
        built.tracer_provider = _tracer_provider(resource, cfg, span_exporter)
        built._closers.append(built.tracer_provider.shutdown)
    readers = _metric_readers(cfg, built)
    if readers:
        from opentelemetry.sdk.metrics import MeterProvider

        built.meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        built._closers.insert(0, built.meter_provider.shutdown)
    return built


def _tracer_provider(resource: Any, cfg: TelemetryConfig, span_exporter: Any) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=resource)
    if cfg.traces_exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_span_exporter(cfg.otlp_protocol)))
    elif cfg.traces_exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


def _otlp_span_exporter(protocol: str) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def _metric_readers(cfg: TelemetryConfig, built: Telemetry) -> list[Any]:
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    readers: list[Any] = []
    if cfg.metrics_exporter == "otlp":
        readers.append(PeriodicExportingMetricReader(_otlp_metric_exporter(cfg.otlp_protocol)))
    elif cfg.metrics_exporter == "console":
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    if cfg.metrics_addr:
        readers.append(_serve_metrics(cfg.metrics_addr, built))
    return readers


def _otlp_metric_exporter(protocol: str) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    return OTLPMetricExporter()


def _serve_metrics(addr: str, built: Telemetry) -> Any:
    """A reader whose metrics a Prometheus text endpoint on ``addr`` serves (own registry:
    names exactly as the platform writes them, no scope labels)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(
        scope_info_enabled=False,
        resource_attribute_filter=lambda key: key == "service.name",
        registry=registry,
    )
    host, port = _split_addr(addr)
    server, thread = start_http_server(port, host, registry=registry)
    built.metrics_server = server
    built.metrics_port = server.server_port

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    built._closers.append(stop)
    return reader


def setup_telemetry(service: str, cfg: TelemetryConfig, *, span_exporter: Any = None) -> Telemetry:
    """Installs this process's providers (once per process) and counts the start.

    Providers flush when the process exits; ``shutdown()`` does it sooner.
    """
    built = build_telemetry(service, cfg, span_exporter)
    if built.tracer_provider is not None:
        trace.set_tracer_provider(built.tracer_provider)
    if built.meter_provider is not None:
        otel_metrics.set_meter_provider(built.meter_provider)
    metrics.container_restarts.add(1, {"service": cfg.service_name or service})
    if built.metrics_port:
        log.info("%s serves metrics on port %d", service, built.metrics_port)
    return built


# --- the trace context as text ----------------------------------------------------------------


def current_traceparent() -> str:
    """The ``traceparent`` of the current span, "" when there is none to continue."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT, "")


def traceparent_of_span(span: Span) -> str:
    """The ``traceparent`` that continues ``span``'s trace under it."""
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT, "")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a stored ``traceparent`` continues; None (a new trace) when empty."""
    if not traceparent:
        return None
    return extract({TRACEPARENT: traceparent})


def headers_with_trace(headers: Mapping[str, str], traceparent: str | None) -> dict[str, str]:
    """``headers`` plus the trace context of ``traceparent`` (as given), when there is one."""
    out = dict(headers)
    if traceparent:
        out[TRACEPARENT] = traceparent
    return out


def traceparent_of(headers: Mapping[str, str] | None) -> str:
    """The ``traceparent`` in message headers, "" when absent."""
    return (headers or {}).get(TRACEPARENT, "")


@contextmanager
def span_in(
    traceparent: str | None,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span continuing the trace ``traceparent`` names (a new one when empty), current
    while the block runs; an exception marks it failed."""
    with tracer.start_as_current_span(
        name, context=context_of(traceparent), kind=kind, attributes=attributes
    ) as span:
        yield span


async def traced(
    traceparent: str | None,
    name: str,
    work: Awaitable[T],
    *,
    attributes: Mapping[str, Any] | None = None,
) -> T:
    """Awaits ``work`` inside :func:`span_in`: for background work resuming a stored trace."""
    with span_in(traceparent, name, attributes=attributes):
        return await work


# --- gRPC: a server span per call, a client span per outgoing call -----------------------------


def _traced_method(method: str) -> bool:
    return not method.startswith(UNTRACED_SERVICES)


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _end_call(span: Span, code: grpc.StatusCode, details: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}"))
    span.end()


class ServerTelemetry(grpc.aio.ServerInterceptor):
    """A SERVER span for every call, continuing the caller's trace; with ``api_metrics``,
    the api_* metrics too (the public API: the gateway).

    Sits outside the error interceptor, so it sees the status the caller gets.
    """

    def __init__(self, *, api_metrics: bool = False) -> None:
        self.api_metrics = api_metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not _traced_method(method):
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        parent = extract({k: v for k, v in metadata if isinstance(v, str)})
        call = _ServerCall(method, parent, self.api_metrics)
        if handler.unary_unary:
            return handler._replace(unary_unary=call.unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=call.unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=call.stream(handler.unary_stream))
        if handler.stream_stream:
            return handler._replace(stream_stream=call.stream(handler.stream_stream))
        return handler


@dataclass(frozen=True)
class _ServerCall:
    method: str
    parent: otel_context.Context
    api_metrics: bool

    def _start(self) -> Span:
        return tracer.start_span(
            self.method.lstrip("/"),
            context=self.parent,
            kind=SpanKind.SERVER,
            attributes=_rpc_attributes(self.method),
        )

    def _end(
        self, span: Span, context: grpc.aio.ServicerContext, code: grpc.StatusCode, started: float
    ) -> None:
        _end_call(span, code, _details(context))
        if self.api_metrics:
            metrics.api_call(self.method.lstrip("/"), code.name, time.perf_counter() - started)

    def unary(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, span = time.perf_counter(), self._start()
            code = grpc.StatusCode.OK
            try:
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    reply = await fn(request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            else:
                code = _code(context) or grpc.StatusCode.OK
                return reply
            finally:
                self._end(span, context, code, started)

        return call

    def stream(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """The span is current while the servicer's generator runs, one step at a time: an
        attached context must be detached in the context it was attached in, and a stream
        left at a ``yield`` (the client went away) is closed later, by the event loop's
        finalizer in a task of its own."""

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, span = time.perf_counter(), self._start()
            current = trace.set_span_in_context(span, self.parent)
            items = fn(request, context)
            code = grpc.StatusCode.OK
            try:
                while True:
                    token = otel_context.attach(current)
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        break
                    finally:
                        otel_context.detach(token)
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            else:
                code = _code(context) or grpc.StatusCode.OK
            finally:
                try:
                    await items.aclose()
                finally:
                    self._end(span, context, code, started)

        return call


def _code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


def _details(context: grpc.aio.ServicerContext) -> str | None:
    try:
        details = context.details()
    except Exception:
        return None
    return details.decode() if isinstance(details, bytes) else details


class _ClientSpans:
    """A CLIENT span for every outgoing call, its ``traceparent`` sent in the metadata.

    The call object is handed back as it is (stream reads, ``code()``, cancel all work as
    without the interceptor); the span ends when the call is done.
    """

    def __init__(self) -> None:
        self._finishing: set[asyncio.Task[None]] = set()

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if not _traced_method(method):
            return await continuation(details, request)
        span = tracer.start_span(
            method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
        )
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
        try:
            call = await continuation(details._replace(metadata=metadata), request)
        except grpc.RpcError as err:
            _end_call(span, err.code(), err.details())
            raise
        except BaseException:
            _end_call(span, grpc.StatusCode.UNKNOWN, "the call could not start")
            raise
        call.add_done_callback(lambda done: self._finish_soon(span, done))
        return call

    def _finish_soon(self, span: Span, call: Any) -> None:
        # The status of a finished aio call is read with an await.
        task = asyncio.get_running_loop().create_task(_finish_client_span(span, call))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)


# A channel gives each interceptor one kind of call (the first kind it implements), hence
# one class per kind.
class _UnaryUnarySpans(_ClientSpans, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._intercept(continuation, details, request)


class _UnaryStreamSpans(_ClientSpans, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._intercept(continuation, details, request)


class _StreamUnarySpans(_ClientSpans, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._intercept(continuation, details, requests)


class _StreamStreamSpans(_ClientSpans, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._intercept(continuation, details, requests)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that trace a channel's calls of every kind."""
    return [_UnaryUnarySpans(), _UnaryStreamSpans(), _StreamUnarySpans(), _StreamStreamSpans()]


async def _finish_client_span(span: Span, call: Any) -> None:
    if call.cancelled():
        _end_call(span, grpc.StatusCode.CANCELLED, "cancelled by the caller")
        return
    try:
        code, details = await call.code(), await call.details()
    except Exception:
        code, details = grpc.StatusCode.UNKNOWN, "status unavailable"
    _end_call(span, code, details)
