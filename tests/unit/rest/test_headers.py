"""HTTP headers <-> gRPC metadata, Grpc-Timeout, and how streams are negotiated."""

from __future__ import annotations

import pytest

from comfyfleet.common.errors import InvalidArgument
from comfyfleet.common.tenancy import TENANT_KEY
from services.gateway.rest.headers import grpc_timeout, outgoing_metadata, response_headers
from services.gateway.rest.streaming import wants_event_stream


def test_credentials_idempotency_and_grpc_metadata_are_forwarded() -> None:
    got = outgoing_metadata(
        [
            ("Authorization", "Bearer k"),
            ("X-Api-Key", "cf_123"),
            ("Idempotency-Key", "req-1"),
            ("Grpc-Metadata-X-Trace", "t1"),
            ("Content-Type", "application/json"),
            ("Cookie", "secret"),
        ],
        "10.0.0.9",
    )
    assert got == [
        ("authorization", "Bearer k"),
        ("x-api-key", "cf_123"),
        ("idempotency-key", "req-1"),
        ("x-trace", "t1"),
        ("x-forwarded-for", "10.0.0.9"),
    ]


def test_reserved_metadata_cannot_be_smuggled_in() -> None:
    got = outgoing_metadata(
        [
            (f"Grpc-Metadata-{TENANT_KEY}", "someone-else"),
            ("Grpc-Metadata-Grpc-Timeout", "1S"),
            ("Grpc-Metadata-Thing-Bin", "AAA="),
        ],
        None,
    )
    assert got == []


def test_forwarded_for_is_appended_to() -> None:
    got = outgoing_metadata([("X-Forwarded-For", "1.2.3.4")], "10.0.0.9")
    assert got == [("x-forwarded-for", "1.2.3.4, 10.0.0.9")]


def test_response_metadata_gets_grpc_gateway_prefixes() -> None:
    got = response_headers(
        [("x-ratelimit-remaining", "9"), ("content-type", "application/grpc")],
        [("x-cost", "0.1"), ("grpc-status-details-bin", b"\x00"), ("trace-bin", b"\x01")],
    )
    assert got == [("Grpc-Metadata-x-ratelimit-remaining", "9"), ("Grpc-Trailer-x-cost", "0.1")]


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("10S", 10.0), ("500m", 0.5), ("2M", 120.0), ("1H", 3600.0), ("250u", 0.00025), (" 7S ", 7.0)],
)
def test_grpc_timeout(raw: str, seconds: float) -> None:
    assert grpc_timeout({"Grpc-Timeout": raw}) == pytest.approx(seconds)


def test_no_grpc_timeout_is_no_deadline() -> None:
    assert grpc_timeout({}) is None


@pytest.mark.parametrize("raw", ["10", "S", "1.5S", "10s", "123456789S"])
def test_bad_grpc_timeout_is_invalid_argument(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        grpc_timeout({"Grpc-Timeout": raw})
    assert caught.value.violations[0].field == "Grpc-Timeout"


@pytest.mark.parametrize(
    ("accept", "sse"),
    [
        ("text/event-stream", True),
        ("application/json, text/event-stream;q=0.9", True),
        ("Text/Event-Stream", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_event_streams_are_chosen_by_accept(accept: str, sse: bool) -> None:
    assert wants_event_stream(accept) is sse


def test_values_grpc_cannot_carry_are_invalid_arguments_naming_the_header() -> None:
    for header, value in [
        ("X-Api-Key", "cl\u00e9"),
        ("Authorization", "Bearer \x01"),
        ("Grpc-Metadata-Trace", "\u2603"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            outgoing_metadata([(header, value)], None)
        assert caught.value.violations[0].field == header
