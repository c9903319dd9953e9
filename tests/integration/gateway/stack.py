"""A gateway in front of a real scheduler and models service, all in this process: the
platform as a client sees it, without executors (accepted executions stay queued)."""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from comfyfleet.common.config import DatabaseConfig, NatsConfig
from services.gateway.config import Limits
from services.gateway.ratelimit import RateLimit
from services.scheduler.config import Config as SchedulerConfig
from services.scheduler.server import running_scheduler
from tests.integration.gateway.conftest import Gw, Metadata, StartGateway
from tests.integration.models.conftest import ModelsService, start_models
from tests.integration.scheduler.conftest import FAST
from tests.support.infra import NatsInfo, NatsNames, S3Info

StartModels = Callable[..., AsyncIterator[ModelsService]]
__all__ = ["Platform", "platform", "start_models"]


@dataclass
class Platform:
    gw: Gw
    models: ModelsService


@pytest.fixture
async def platform(
    start_gateway: StartGateway,
    start_models: StartModels,
    fresh_database: str,
    nats_server: NatsInfo,
    nats_names: NatsNames,
    s3_server: S3Info,
    s3_bucket: str,
) -> AsyncIterator[Platform]:
    async for models in start_models():
        models_addr = f"127.0.0.1:{models.port}"
        cfg = SchedulerConfig(
            grpc_addr="127.0.0.1:0",
            database=DatabaseConfig(fresh_database),
            nats=NatsConfig(nats_server.url, nats_names.stream, nats_names.subject_prefix),
            s3=s3_server.config(s3_bucket),
            settings=FAST,
            models_addr=models_addr,
        )
        async with (
            running_scheduler(cfg) as scheduler,
            start_gateway(
                scheduler_addr=f"127.0.0.1:{scheduler.port}",
                models_addr=models_addr,
                limits=Limits(rate=RateLimit(0.0, 1)),
            ) as gw,
        ):
            yield Platform(gw, models)


async def tenant_key(gw: Gw, name: str) -> tuple[Metadata, str]:
    """A new tenant's key with every scope, as call metadata and as a REST header value."""
    tenant = await gw.tenant(name)
    key = await gw.key(tenant.id, "executions:write", "models:write", "webhooks:write")
    return key, key[0][1]


# The protobuf wire format, written by hand so that a test can send what no protobuf library
# would encode: strings that are not UTF-8, Structs nested deeper than parsers read.
LEN, VARINT, FIXED64 = 2, 0, 1


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


def text(value: str) -> bytes:
    """UTF-8, with lone surrogates encoded anyway (which makes it invalid UTF-8)."""
    return value.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Deep:
    """A JSON value nested ``depth`` lists deep, built without recursion when encoded."""

    depth: int

    def json(self) -> str:
        return "[" * self.depth + "1" + "]" * self.depth


def struct_value(value: Any) -> bytes:
    """``google.protobuf.Value`` bytes of a JSON value (numbers become doubles)."""
    if isinstance(value, Deep):
        encoded = struct_value(1)
        for _ in range(value.depth):
            encoded = length_delimited(6, length_delimited(1, encoded))
        return encoded
    if value is None:
        return varint(1 << 3 | VARINT) + varint(0)
    if isinstance(value, bool):
        return varint(4 << 3 | VARINT) + varint(int(value))
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.copysign(math.inf, value)
        return varint(2 << 3 | FIXED64) + struct.pack("<d", number)
    if isinstance(value, str):
        return length_delimited(3, text(value))
    if isinstance(value, dict):
        return length_delimited(5, struct_fields(value))
    return length_delimited(6, b"".join(length_delimited(1, struct_value(v)) for v in value))


def struct_fields(value: dict[str, Any]) -> bytes:
    """``google.protobuf.Struct`` bytes of a JSON object."""
    return b"".join(
        length_delimited(1, length_delimited(1, text(k)) + length_delimited(2, struct_value(v)))
        for k, v in value.items()
    )
