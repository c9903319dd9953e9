"""HTTP headers <-> gRPC metadata, the grpc-gateway way, kept to what our API uses."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.tenancy import MAX_CONCURRENCY_KEY, TENANT_KEY

# Request headers forwarded as metadata under these names; grpc-gateway forwards
# `Authorization` the same way, and our API adds its key and idempotency headers.
FORWARDED = {
    "authorization": "authorization",
    "x-api-key": "x-api-key",
    "idempotency-key": "idempotency-key",
}
METADATA_PREFIX = "grpc-metadata-"
RESPONSE_HEADER_PREFIX = "Grpc-Metadata-"
RESPONSE_TRAILER_PREFIX = "Grpc-Trailer-"
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Never taken from or given to HTTP: gRPC's own and connection-level keys, and the tenant
# that only the gateway itself may set for the services behind it.
_RESERVED = {
    "content-type",
    "user-agent",
    "te",
    "host",
    "connection",
    TENANT_KEY,
    MAX_CONCURRENCY_KEY,
}


def outgoing_metadata(
    headers: Iterable[tuple[str, str]], peer: str | None
) -> list[tuple[str, str]]:
    """Metadata for the gRPC call: the forwarded headers, ``Grpc-Metadata-*`` and the peer.

    A forwarded value gRPC cannot carry (anything but printable ASCII) is INVALID_ARGUMENT
    naming the header, rather than a failed call.
    """
    out: list[tuple[str, str]] = []
    forwarded_for = ""
    for name, value in headers:
        key = name.lower()
        if key in FORWARDED:
            out.append((FORWARDED[key], _metadata_value(name, value)))
        elif key.startswith(METADATA_PREFIX):
            inner = key[len(METADATA_PREFIX) :]
            if _passable(inner):
                out.append((inner, _metadata_value(name, value)))
        elif key == "x-forwarded-for":
            forwarded_for = _metadata_value(name, value)
    if peer:
        out.append(("x-forwarded-for", f"{forwarded_for}, {peer}" if forwarded_for else peer))
    return out


def response_headers(
    initial: Iterable[tuple[str, str | bytes]], trailing: Iterable[tuple[str, str | bytes]]
) -> list[tuple[str, str]]:
    """Response metadata as ``Grpc-Metadata-*`` headers and trailing as ``Grpc-Trailer-*``.

    Trailers travel as ordinary headers because the whole unary response is known first.
    """
    out = [(RESPONSE_HEADER_PREFIX + k, v) for k, v in initial if _passable(k) and _text(v)]
    out += [(RESPONSE_TRAILER_PREFIX + k, v) for k, v in trailing if _passable(k) and _text(v)]
    return out  # type: ignore[return-value]


def grpc_timeout(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Grpc-Timeout`` header (gRPC's "10S", "500m" form), None when absent."""
    raw = headers.get("Grpc-Timeout")
    if raw is None:
        return None
    match = _TIMEOUT.match(raw.strip())
    if match is None:
        text = f"{raw!r} is not an amount and a unit such as 10S or 500m"
        violation = FieldViolation("Grpc-Timeout", text, "INVALID_HEADER")
        raise InvalidArgument(f"invalid Grpc-Timeout header: {text}", [violation])
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")


def _metadata_value(header: str, value: str) -> str:
    if _PRINTABLE_ASCII.match(value):
        return value
    text = "gRPC metadata carries printable ASCII only"
    raise InvalidArgument(
        f"invalid {header} header: {text}", [FieldViolation(header, text, "INVALID_HEADER")]
    )


def _passable(key: str) -> bool:
    return (
        bool(key)
        and key not in _RESERVED
        and not key.startswith("grpc-")
        and not key.startswith(":")
        and not key.endswith("-bin")
    )


def _text(value: str | bytes) -> bool:
    return isinstance(value, str)
