"""The reverse proxy: one HTTP request -> one generic gRPC call -> one HTTP response or stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import message, message_factory
from google.rpc import code_pb2, status_pb2
from multidict import CIMultiDict

from comfyfleet.common.errors import ComfyfleetError, from_rpc_error
from comfyfleet.common.grpcserver import MAX_MESSAGE_BYTES, channel
from services.gateway.rest import headers, streaming
from services.gateway.rest.replies import JSON, error_response
from services.gateway.rest.routing import Lookup, Route, RouteTable
from services.gateway.rest.tracing import name_route
from services.gateway.rest.transcode import (
    LAST_EVENT_ID,
    HttpInput,
    JsonOptions,
    build_request,
    dumps,
    response_json,
)


@dataclass(frozen=True)
class RestOptions:
    """How the REST front reads requests and writes responses."""

    # Bodies above this are refused with 413 before being read in full; the default matches
    # the gRPC message limit, since a larger body could not be forwarded anyway.
    max_body_bytes: int = MAX_MESSAGE_BYTES
    json: JsonOptions = field(default_factory=JsonOptions)
    # An SSE comment after this much silence keeps proxies from closing an idle stream.
    sse_keepalive_s: float = 15.0


@dataclass(frozen=True)
class Outgoing:
    """A gRPC call about to be made for an HTTP request."""

    route: Route
    request: message.Message
    metadata: list[tuple[str, str]]
    timeout: float | None


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class RestProxy:
    """Serves every route of a table by calling the gRPC server at ``grpc_target``."""

    def __init__(self, table: RouteTable, grpc_target: str, options: RestOptions) -> None:
        self.table = table
        self.grpc_target = grpc_target
        self.options = options
        self._channel: grpc.aio.Channel | None = None
        self._callables: dict[str, Callable[..., Any]] = {}
        self._stopping = asyncio.Event()

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[RestProxy]:
        """Holds the channel to the gRPC server for the lifetime of the HTTP app."""
        self._stopping = asyncio.Event()
        self._channel = channel(self.grpc_target)
        try:
            yield self
        finally:
            await self._channel.close()
            self._channel = None
            self._callables.clear()

    def stop_streams(self) -> None:
        """Ends open streams with UNAVAILABLE, so clients resume elsewhere, before shutdown."""
        self._stopping.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        found = self.table.lookup(request.method, request.raw_path.partition("?")[0])
        if found.route is None:
            return _routing_error(found)
        route = found.route
        name_route(request.method, route.template.source)
        try:
            call_request = await self._request_message(request, found, route)
            timeout = headers.grpc_timeout(request.headers)
            metadata = headers.outgoing_metadata(request.headers.items(), request.remote)
        except BodyTooLarge:
            return _too_large(self.options.max_body_bytes)
        except ComfyfleetError as err:
            return error_response(err.to_status())
        outgoing = Outgoing(route, call_request, metadata, timeout)
        if route.server_streaming:
            return await self._stream(request, outgoing)
        return await self._unary(outgoing)

    async def _request_message(
        self, request: web.Request, found: Lookup, route: Route
    ) -> message.Message:
        body = await read_body(request, self.options.max_body_bytes) if route.body else b""
        given = HttpInput(
            variables=found.variables,
            query={k: request.query.getall(k) for k in request.query},
            body=body,
            last_event_id=request.headers.get(LAST_EVENT_ID),
        )
        return build_request(route, given, self.options.json)

    async def _unary(self, out: Outgoing) -> web.StreamResponse:
        call = self._callable(out.route)(out.request, metadata=out.metadata, timeout=out.timeout)
        try:
            reply = await call
            initial, trailing = await call.initial_metadata(), await call.trailing_metadata()
        except grpc.aio.AioRpcError as err:
            extra = headers.response_headers(
                err.initial_metadata() or (), err.trailing_metadata() or ()
            )
            return error_response(from_rpc_error(err).to_status(), extra)
        finally:
            # A no-op once the call is over; stops it when the client went away mid-call.
            call.cancel()
        extra = headers.response_headers(initial or (), trailing or ())
        body = dumps(response_json(reply, out.route.response_body, self.options.json))
        return web.Response(body=body, content_type=JSON, headers=CIMultiDict(extra))

    async def _stream(self, request: web.Request, out: Outgoing) -> web.StreamResponse:
        call = self._callable(out.route)(out.request, metadata=out.metadata, timeout=out.timeout)
        sse = streaming.wants_event_stream(request.headers.get("Accept", ""))
        keepalive = self.options.sse_keepalive_s if sse else None
        relay = streaming.Relay(request, call, out.route, self.options.json, sse=sse)
        reader = streaming.Reader(call, self._stopping, keepalive)
        try:
            return await relay.run(reader)
        finally:
            reader.close()
            call.cancel()

    def _callable(self, route: Route) -> Callable[..., Any]:
        """A generic stub for the route's method, made once from its message classes."""
        made = self._callables.get(route.grpc_path)
        if made is not None:
            return made
        if self._channel is None:
            raise RuntimeError("the REST app is not started")
        request_cls = message_factory.GetMessageClass(route.method.input_type)
        response_cls = message_factory.GetMessageClass(route.method.output_type)
        kind = self._channel.unary_stream if route.server_streaming else self._channel.unary_unary
        made = kind(
            route.grpc_path,
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        self._callables[route.grpc_path] = made
        return made


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is known to exceed ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _status(code: int, text: str) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=text)


def _routing_error(found: Lookup) -> web.Response:
    """grpc-gateway's answers: NOT_FOUND (404), and UNIMPLEMENTED (501) for a wrong method."""
    if not found.allowed:
        return error_response(_status(code_pb2.NOT_FOUND, "Not Found"))
    allow = [("Allow", ", ".join(found.allowed))]
    return error_response(_status(code_pb2.UNIMPLEMENTED, "Method Not Allowed"), allow)


def _too_large(limit: int) -> web.Response:
    text = f"the request body is larger than {limit} bytes"
    response = error_response(_status(code_pb2.RESOURCE_EXHAUSTED, text), http=413)
    # The rest of the body is never read, so the connection cannot carry another request.
    response.force_close()
    return response
