"""Refusing NUL characters in any text of a public request, before it goes anywhere.

PostgreSQL cannot store U+0000 in text or jsonb, so one in a label, a description or an id
would surface as an internal error deep in some service. The gateway answers it once, for
every method, with INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor, message

from comfyfleet.common.errors import FieldViolation, InvalidArgument, to_grpc_status

_STRING = descriptor.FieldDescriptor.TYPE_STRING
_MESSAGE = descriptor.FieldDescriptor.TYPE_MESSAGE


def nul_fields(msg: message.Message, prefix: str = "") -> Iterator[str]:
    """The paths of the text fields (map keys included) of ``msg`` that hold a NUL."""
    for fd, value in msg.ListFields():
        path = f"{prefix}{fd.name}"
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            yield from _map_nuls(fd, value, path)
        elif fd.is_repeated:
            for i, item in enumerate(value):
                yield from _value_nuls(fd, item, f"{path}[{i}]")
        else:
            yield from _value_nuls(fd, value, path)


def _map_nuls(fd: descriptor.FieldDescriptor, value: Any, path: str) -> Iterator[str]:
    value_fd = fd.message_type.fields_by_name["value"]
    for key, item in value.items():
        if isinstance(key, str) and "\x00" in key:
            yield f"{path} key"
        yield from _value_nuls(value_fd, item, f"{path}[{key!r}]")


def _value_nuls(fd: descriptor.FieldDescriptor, value: Any, path: str) -> Iterator[str]:
    if fd.type == _STRING and "\x00" in value:
        yield path
    elif fd.type == _MESSAGE:
        yield from nul_fields(value, f"{path}.")


def check_text(request: message.Message) -> None:
    paths = list(nul_fields(request))
    if paths:
        raise InvalidArgument(
            "text fields must not contain NUL characters",
            [FieldViolation(p, "must not contain NUL (U+0000) characters") for p in paths],
        )


class TextInterceptor(grpc.aio.ServerInterceptor):
    """Applies :func:`check_text` to every unary request, streaming responses included."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary:
            return handler._replace(unary_unary=_checked_unary(handler.unary_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_checked_stream(handler.unary_stream))
        return handler


async def _refuse(context: grpc.aio.ServicerContext, request: message.Message) -> None:
    try:
        check_text(request)
    except InvalidArgument as err:
        await context.abort_with_status(to_grpc_status(err.to_status()))


def _checked_unary(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: message.Message, context: grpc.aio.ServicerContext) -> Any:
        await _refuse(context, request)
        return await fn(request, context)

    return call


def _checked_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: message.Message, context: grpc.aio.ServicerContext) -> Any:
        await _refuse(context, request)
        async for item in fn(request, context):
            yield item

    return call
