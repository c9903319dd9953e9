"""Tracing of the REST front: each transcoded request is a SERVER span that continues the
caller's W3C trace context (``traceparent`` and ``tracestate`` headers), so the gRPC call it
becomes, and everything that call sets off, joins the caller's trace.

The span is current while the request is served (a stream: until it ends), and its own
``traceparent`` goes back in the response headers, for callers that start no trace of their
own and want to find the one their request made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from comfyfleet.common.telemetry import TRACEPARENT, traceparent_of_span, tracer

SPAN_TRACEPARENT = web.RequestKey("span_traceparent", str)


@asynccontextmanager
async def request_span(request: web.Request) -> AsyncIterator[Span]:
    """The request's SERVER span, current inside the block; named by its route once
    :func:`name_route` knows it. A 5xx answer (or an exception) marks it failed."""
    parent = extract({k.lower(): v for k, v in request.headers.items()})
    attributes = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
    }
    with tracer.start_as_current_span(
        request.method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        if span.is_recording():
            request[SPAN_TRACEPARENT] = traceparent_of_span(span)
        yield span


def ended(span: Span, response: web.StreamResponse) -> None:
    """Records the answer's status on the request's span."""
    span.set_attribute("http.response.status_code", response.status)
    if response.status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status}"))


def name_route(method: str, template: str) -> None:
    """Names the current request's span by the route it matched (``POST /v1/executions``)."""
    span = trace.get_current_span()
    span.update_name(f"{method} {template}")
    span.set_attribute("http.route", template)


async def add_traceparent(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the request span's ``traceparent`` as a response header."""
    traceparent = request.get(SPAN_TRACEPARENT)
    if traceparent and TRACEPARENT not in response.headers:
        response.headers[TRACEPARENT] = traceparent
