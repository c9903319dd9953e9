"""Standard Webhooks signatures, checked against the spec's own example and the library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from services.webhook.signing import (
    SECRET_BYTES,
    new_secret,
    request_headers,
    secret_key,
    sign,
    signature_header,
)

# The example in the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
# The published value (the spec, the standardwebhooks and svix libraries all agree on it).
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_known_answer_from_the_spec() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_signature_covers_id_timestamp_and_body() -> None:
    assert sign(SPEC_SECRET, SPEC_ID + "x", SPEC_TIMESTAMP, SPEC_BODY) != SPEC_SIGNATURE
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY) != SPEC_SIGNATURE
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY + b" ") != SPEC_SIGNATURE


def test_new_secrets_are_whsec_and_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(secret_key(first)) == SECRET_BYTES


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!"])
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        secret_key(bad)


def test_rotation_sends_one_signature_per_secret_and_either_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"type":"execution.succeeded"}'
    now = int(datetime.now(UTC).timestamp())
    headers = request_headers([new, old], "msg_1", now, body)
    assert headers["webhook-signature"] == signature_header([new, old], "msg_1", now, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"type": "execution.succeeded"}
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"] == str(now)


def test_the_library_refuses_a_secret_that_did_not_sign() -> None:
    body = b"{}"
    now = int(datetime.now(UTC).timestamp())
    headers = request_headers([new_secret()], "msg_2", now, body)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(other).verify(body, headers)
