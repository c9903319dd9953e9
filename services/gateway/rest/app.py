"""The REST front as an aiohttp application, and serving it on an address."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from google.rpc import code_pb2, status_pb2

from services.gateway.rest import tracing
from services.gateway.rest.docs import render_docs
from services.gateway.rest.openapi import openapi_document
from services.gateway.rest.protodocs import load_comments
from services.gateway.rest.proxy import RestOptions, RestProxy
from services.gateway.rest.replies import error_response
from services.gateway.rest.routing import RouteTable, ServiceRef, resolve_services, routes_of
from services.gateway.rest.tracing import request_span
from services.gateway.rest.transcode import dumps

log = logging.getLogger(__name__)

PROXY_KEY = web.AppKey("rest_proxy", RestProxy)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_rest_app(
    grpc_target: str,
    services: Iterable[ServiceRef],
    *,
    openapi: bool = True,
    options: RestOptions | None = None,
    comments: Mapping[str, str] | None = None,
) -> web.Application:
    """An app that serves every ``google.api.http`` binding of ``services`` over ``grpc_target``.

    ``services`` are full names in the default descriptor pool (import the ``*_pb2`` modules
    first), service descriptors or file descriptors. Routes the app's own router knows
    (``/health``, ``/openapi.json`` and ``/docs`` when ``openapi``, and whatever the caller
    adds) are served first; every other request goes through the transcoder, which answers
    unknown paths with a NOT_FOUND Status. ``comments`` (full name -> text) describe the
    OpenAPI document; the committed proto comments by default.
    """
    opts = options or RestOptions()
    table = RouteTable(routes_of(resolve_services(services)))
    proxy = RestProxy(table, grpc_target, opts)
    app = web.Application(
        middlewares=[_transcode_unrouted(proxy)], client_max_size=opts.max_body_bytes + 1
    )
    app[PROXY_KEY] = proxy
    app.router.add_get("/health", _health)
    if openapi:
        document = openapi_document(table.routes, load_comments() if comments is None else comments)
        _add_documents(app, document)
    app.on_response_prepare.append(tracing.add_traceparent)
    app.cleanup_ctx.append(_connected(proxy))
    app.on_shutdown.append(_stop_streams(proxy))
    return app


def _add_documents(app: web.Application, document: dict[str, Any]) -> None:
    """Serves the OpenAPI document and its HTML rendering, both made once, here."""
    spec = dumps(document)
    page = render_docs(document)

    async def openapi_json(_: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    async def docs(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)


def _transcode_unrouted(proxy: RestProxy) -> Middleware:
    @web.middleware
    async def transcode(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is None:
            return await handler(request)
        async with request_span(request) as span:
            try:
                response = await proxy.handle(request)
            except ConnectionResetError:
                raise
            except Exception:
                # Still a Status body, as for every other error, and no internals in it.
                log.exception("REST %s %s failed", request.method, request.path)
                response = error_response(
                    status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
                )
            tracing.ended(span, response)
            return response

    return transcode


def _connected(proxy: RestProxy) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        async with proxy.connected():
            yield

    return lifecycle


def _stop_streams(proxy: RestProxy) -> Callable[[web.Application], Awaitable[None]]:
    async def on_shutdown(_: web.Application) -> None:
        proxy.stop_streams()

    return on_shutdown


async def _health(_: web.Request) -> web.Response:
    """Liveness: the process answers HTTP. Readiness is the gateway's to add."""
    return web.json_response({"status": "SERVING"})


@dataclass(frozen=True)
class RunningRest:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve_rest(
    address: str, app: web.Application, *, shutdown_timeout: float = 5.0
) -> AsyncIterator[RunningRest]:
    """Serves ``app`` on ``address`` ("host:port", port 0 picks one) until the block exits.

    A client that disconnects cancels its handler, and with it the gRPC call it waits on.
    On exit, open streams end with UNAVAILABLE and requests in flight get ``shutdown_timeout``.
    """
    host, port = split_address(address)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port)
        await site.start()
        bound = runner.addresses[0]
        yield RunningRest(host or "0.0.0.0", int(bound[1]))
    finally:
        await runner.cleanup()


def split_address(address: str) -> tuple[str, int]:
    """ "127.0.0.1:8080" -> ("127.0.0.1", 8080); "[::]:0" -> ("::", 0); ":8080" -> ("", 8080)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"REST address {address!r} is not host:port")
    return host.strip("[]"), int(port)
