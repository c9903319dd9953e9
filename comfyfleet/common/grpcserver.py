"""Building gRPC servers the same way in every service: errors, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from comfyfleet.common.errors import (
    ComfyfleetError,
    status_of,
    to_grpc_status,
    transient_fault,
)
from comfyfleet.common.telemetry import ServerTelemetry, client_interceptors

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns our typed errors into rich statuses, for every kind of method."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, method))
        return handler


async def _abort(context: grpc.aio.ServicerContext, err: BaseException, method: str) -> None:
    if transient_fault(err) is not None:
        log.warning("%s met a dependency that is down: %r", method, err)
    elif not isinstance(err, ComfyfleetError | NotImplementedError):
        log.exception("unhandled error in %s", method, exc_info=err)
    await context.abort_with_status(to_grpc_status(status_of(err)))


def _wrap_unary(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as err:
            await _abort(context, err, method)

    return call


def _wrap_stream(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in fn(request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as err:
            await _abort(context, err, method)

    return call


@dataclass
class Registration:
    """A servicer and the generated function that adds it, with its service's full name."""

    servicer: object
    add: Callable[[Any, grpc.aio.Server], None]
    service_name: str


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer  # type: ignore[name-defined]

    async def stop(self, grace: float) -> None:
        """Stops taking calls, marks itself not serving, and lets calls in flight finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


@asynccontextmanager
async def serve(
    address: str,
    registrations: Iterable[Registration],
    *,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    grace: float = 5.0,
    max_receive_bytes: int = MAX_MESSAGE_BYTES,
    api_metrics: bool = False,
) -> AsyncIterator[RunningServer]:
    """Serves the registrations on ``address`` ("host:port"; port 0 picks a free one).

    A request message over ``max_receive_bytes`` is refused with RESOURCE_EXHAUSTED. Every
    call gets a span continuing its caller's trace; ``api_metrics`` (the public API) also
    counts and times each call as api_requests_total, api_errors_total and
    api_request_duration_seconds.
    """
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_receive_bytes),
    ]
    # Telemetry outermost, errors innermost: the span sees the status the caller gets.
    chain = [ServerTelemetry(api_metrics=api_metrics), *interceptors, ErrorInterceptor()]
    server = grpc.aio.server(interceptors=chain, options=options)
    regs = list(registrations)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for reg in regs:
        reg.add(reg.servicer, server)
    names = [r.service_name for r in regs]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC server to {address}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(server, port, health_servicer)
    try:
        yield running
    finally:
        await running.stop(grace)


def registration(servicer: object, grpc_module: Any, service: str) -> Registration:
    """Registration for ``servicer`` of ``service`` in a generated ``*_pb2_grpc`` module."""
    add = getattr(grpc_module, f"add_{service}Servicer_to_server")
    for value in vars(grpc_module).values():
        descriptor = getattr(value, "DESCRIPTOR", None)
        services = getattr(descriptor, "services_by_name", {})
        if service in services:
            return Registration(servicer, add, services[service].full_name)
    raise LookupError(f"{service} is not defined next to {grpc_module.__name__}")


async def wait_for_shutdown_signal() -> None:
    """Returns on the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to an internal service, with our message size limits; every call
    on it carries the caller's trace context."""
    return grpc.aio.insecure_channel(
        address, options=CHANNEL_OPTIONS, interceptors=client_interceptors()
    )
