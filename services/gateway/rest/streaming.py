"""Server-streaming methods over HTTP: Server-Sent Events, or grpc-gateway's newline-delimited JSON.

The HTTP status waits for the first message, so a stream that fails at once (an unknown
execution, a bad key) gets an ordinary error response with the right status. Once a message
has gone out, a failure becomes the stream's last item: an ``event: error`` in SSE, an
``{"error": status}`` line in NDJSON.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import message
from google.rpc import code_pb2, status_pb2
from multidict import CIMultiDict

from comfyfleet.common.errors import from_rpc_error
from services.gateway.rest import headers
from services.gateway.rest.replies import JSON, error_response
from services.gateway.rest.routing import Route
from services.gateway.rest.status import status_json
from services.gateway.rest.transcode import JsonOptions, dumps, response_json, sequence_of

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
KEEPALIVE = object()


class ServerStopping(Exception):
    """The HTTP server is shutting down and ends its streams."""


def wants_event_stream(accept: str) -> bool:
    """Whether an ``Accept`` header asks for Server-Sent Events."""
    return any(part.split(";")[0].strip().lower() == EVENT_STREAM for part in accept.split(","))


class Reader:
    """Reads a server stream, noticing shutdown and silence longer than ``keepalive_s``."""

    def __init__(self, call: Any, stopping: asyncio.Event, keepalive_s: float | None) -> None:
        self._call = call
        self._keepalive_s = keepalive_s
        self._stop = asyncio.ensure_future(stopping.wait())
        self._read: asyncio.Future[Any] | None = None

    async def next(self) -> Any:
        """The next message, ``grpc.aio.EOF`` at the end, or KEEPALIVE after a silence.

        Raises the call's AioRpcError when it fails, ServerStopping on shutdown. A pending
        read survives a keepalive, so no message is lost to the timeout.
        """
        if self._read is None:
            self._read = asyncio.ensure_future(self._call.read())
        done, _ = await asyncio.wait(
            {self._read, self._stop},
            timeout=self._keepalive_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._read in done:
            read, self._read = self._read, None
            return read.result()
        if self._stop in done:
            raise ServerStopping()
        return KEEPALIVE

    def close(self) -> None:
        for task in (self._read, self._stop):
            if task is not None:
                task.cancel()


class Relay:
    """Writes what a Reader yields to one HTTP response, as SSE or NDJSON."""

    def __init__(
        self, request: web.Request, call: Any, route: Route, options: JsonOptions, *, sse: bool
    ) -> None:
        self._request = request
        self._call = call
        self._route = route
        self._options = options
        self._sse = sse
        self._response: web.StreamResponse | None = None

    async def run(self, reader: Reader) -> web.StreamResponse:
        try:
            while (item := await reader.next()) is not grpc.aio.EOF:
                await self._open(with_metadata=item is not KEEPALIVE)
                await self._send(item)
            return await self._finish()
        except grpc.aio.AioRpcError as err:
            return await self._fail(from_rpc_error(err).to_status())
        except ServerStopping:
            stopping = "the server is shutting down; resume the stream on another connection"
            return await self._fail(status_pb2.Status(code=code_pb2.UNAVAILABLE, message=stopping))
        except (ValueError, TypeError):
            # A message JSON cannot express (NaN in a Struct, an Any of an unknown type).
            log.exception("cannot write a %s as JSON", self._route.method.output_type.full_name)
            internal = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
            return await self._fail(internal)
        except ConnectionResetError:
            # The client went away; the caller cancels the call.
            if self._response is None:
                raise
            return self._response

    async def _open(self, *, with_metadata: bool) -> None:
        if self._response is not None:
            return
        initial = await self._call.initial_metadata() if with_metadata else None
        response = web.StreamResponse(
            headers=CIMultiDict(headers.response_headers(initial or (), ()))
        )
        response.content_type = EVENT_STREAM if self._sse else JSON
        if self._sse:
            response.headers["Cache-Control"] = "no-cache"
            # Tells nginx-style proxies not to buffer the events.
            response.headers["X-Accel-Buffering"] = "no"
        await response.prepare(self._request)
        self._response = response

    async def _send(self, item: Any) -> None:
        assert self._response is not None
        if item is KEEPALIVE:
            await self._response.write(b": keepalive\n\n")
            return
        await self._response.write(self._encode(item))

    def _encode(self, msg: message.Message) -> bytes:
        value = response_json(msg, self._route.response_body, self._options)
        if not self._sse:
            return dumps({"result": value}) + b"\n"
        sequence = sequence_of(msg)
        event_id = b"" if sequence is None else b"id: %d\n" % sequence
        return event_id + b"data: " + dumps(value) + b"\n\n"

    async def _finish(self) -> web.StreamResponse:
        if self._response is None:
            # An empty stream. 204 also tells an EventSource to stop reconnecting, which
            # is what a resumed watch of a finished execution should do.
            return (
                web.Response(status=204) if self._sse else web.Response(body=b"", content_type=JSON)
            )
        await self._response.write_eof()
        return self._response

    async def _fail(self, status: status_pb2.Status) -> web.StreamResponse:
        if self._response is None:
            return error_response(status)
        body = status_json(status)
        if self._sse:
            chunk = b"event: error\ndata: " + dumps(body) + b"\n\n"
        else:
            chunk = dumps({"error": body}) + b"\n"
        await self._response.write(chunk)
        await self._response.write_eof()
        return self._response
