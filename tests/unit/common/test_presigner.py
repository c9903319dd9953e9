"""The batch presigner signs exactly as the minio SDK does, for the same clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from minio import Minio

from comfyfleet.common.storage import Presigner

WHEN = datetime(2025, 3, 9, 23, 59, 58, tzinfo=UTC)
KEYS = [
    "tenants/acme/executions/ex-1/outputs/attempt-1/slot-000",
    "tenants/acme/executions/ex-1/inputs/photo of me (1).png",
    "tenants/acme/executions/ex-1/inputs/été+ünï~code&x=y?.jpg",
]


def _pair(endpoint: str, secure: bool, region: str) -> tuple[Minio, Presigner]:
    client = Minio(
        endpoint, access_key="AKID/with+odd", secret_key="s3cr3t/+=", secure=secure, region=region
    )
    return client, Presigner(
        client, "fleet-bucket", "AKID/with+odd", "s3cr3t/+=", region, clock=lambda: WHEN
    )


@pytest.mark.parametrize(
    ("endpoint", "secure", "region"),
    [
        ("127.0.0.1:59000", False, "us-east-1"),  # path style, as s3rver and MinIO
        ("minio.internal:9000", True, "eu-central-1"),
        ("s3.eu-west-1.amazonaws.com", True, "eu-west-1"),  # AWS: virtual-host style
    ],
)
def test_put_and_get_urls_are_the_sdks(endpoint: str, secure: bool, region: str) -> None:
    client, presigner = _pair(endpoint, secure, region)
    ttl = timedelta(seconds=3600)
    puts = presigner.urls("PUT", KEYS, 3600)
    gets = presigner.urls("GET", KEYS, 3600)
    for key, put, get in zip(KEYS, puts, gets, strict=True):
        assert put == client.get_presigned_url("PUT", "fleet-bucket", key, ttl, request_date=WHEN)
        assert get == client.presigned_get_object("fleet-bucket", key, ttl, request_date=WHEN)


def test_response_headers_are_signed_like_the_sdks() -> None:
    client, presigner = _pair("127.0.0.1:59000", False, "us-east-1")
    disposition = 'attachment; filename="out put.png"'
    [url] = presigner.urls(
        "GET", [KEYS[0]], 600, query={"response-content-disposition": disposition}
    )
    assert url == client.presigned_get_object(
        "fleet-bucket",
        KEYS[0],
        timedelta(seconds=600),
        response_headers={"response-content-disposition": disposition},
        request_date=WHEN,
    )


def test_the_signing_key_follows_the_day() -> None:
    client, presigner = _pair("127.0.0.1:59000", False, "us-east-1")
    now = [WHEN]
    presigner.clock = lambda: now[0]
    before = presigner.urls("PUT", KEYS[:1], 60)[0]
    now[0] = WHEN + timedelta(seconds=3)  # past midnight: a new scope and key
    after = presigner.urls("PUT", KEYS[:1], 60)[0]
    assert "20250310%2Fus-east-1" in after and "20250309%2Fus-east-1" in before
    assert after == client.get_presigned_url(
        "PUT", "fleet-bucket", KEYS[0], timedelta(seconds=60), request_date=now[0]
    )


@pytest.mark.parametrize("ttl_s", [0, 0.5, 7 * 24 * 3600 + 1])
def test_expiry_out_of_range_is_refused(ttl_s: float) -> None:
    _client, presigner = _pair("127.0.0.1:59000", False, "us-east-1")
    with pytest.raises(ValueError, match="expire"):
        presigner.urls("PUT", KEYS[:1], ttl_s)
