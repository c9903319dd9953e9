"""Refusing requests that are not text, before they go anywhere.

PostgreSQL cannot store U+0000 in text or jsonb, so one in a label, a description or an id
would surface as an internal error deep in some service. The gateway answers it once, for
every method, with INVALID_ARGUMENT naming the field.

A request that does not even decode (a string that is not UTF-8, such as a lone surrogate
encoded anyway; corrupt wire format; messages nested deeper than protobuf reads, as a
deeply nested Struct is) would get gRPC's UNKNOWN: it is INVALID_ARGUMENT here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Undecodable:
    """What a request message that protobuf could not parse is handed on as."""

    error: str

    def refusal(self) -> InvalidArgument:
        text = f"the request is not a valid protobuf message: {self.error}"
        return InvalidArgument(text, [FieldViolation("", text, "UNDECODABLE_REQUEST")])


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserialize``, giving :class:`Undecodable` where it would raise (and gRPC would
    answer UNKNOWN before any code of ours could say why)."""
    if deserialize is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except message.DecodeError as err:
            return Undecodable(str(err))

    return parse


class TextInterceptor(grpc.aio.ServerInterceptor):
    """Applies :func:`check_text` to every unary request, streaming responses included, and
    refuses every request message that does not decode, streamed ones included."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        handler = handler._replace(request_deserializer=_lenient(handler.request_deserializer))
        if handler.unary_unary:
            return handler._replace(unary_unary=_checked_unary(handler.unary_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_checked_stream(handler.unary_stream))
        if handler.stream_unary:
            return handler._replace(stream_unary=_decoded_stream_in(handler.stream_unary))
        return handler


async def _refuse(context: grpc.aio.ServicerContext, request: message.Message) -> None:
    try:
        if isinstance(request, Undecodable):
            raise request.refusal()
        check_text(request)
    except InvalidArgument as err:
        await context.abort_with_status(to_grpc_status(err.to_status()))


def _decoded_stream_in(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A client-streaming method whose stream fails at the first undecodable message.

    The method (which may be forwarding the stream to another service) sees its stream fail
    and gives up however it does; the caller gets INVALID_ARGUMENT either way.
    """

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        refused: list[InvalidArgument] = []

        async def decoded() -> AsyncIterator[Any]:
            async for item in requests:
                if isinstance(item, Undecodable):
                    refused.append(item.refusal())
                    raise refused[-1]
                yield item

        try:
            answer = await fn(decoded(), context)
        except grpc.aio.AbortError:
            raise  # the method answered already; a call has one status
        except (Exception, asyncio.CancelledError):
            if not refused:
                raise
        if not refused:
            return answer
        await context.abort_with_status(to_grpc_status(refused[0].to_status()))

    return call


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
