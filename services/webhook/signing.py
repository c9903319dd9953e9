"""Standard Webhooks signatures: secrets, the signed content, and the request headers.

https://www.standardwebhooks.com — a receiver recomputes HMAC-SHA256 over
``"{webhook-id}.{webhook-timestamp}.{body}"`` with the secret's bytes and compares.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
# The spec allows 24 to 64 random bytes; 32 matches the HMAC-SHA256 block of security.
SECRET_BYTES = 32
USER_AGENT = "comfyfleet-webhooks/1"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret (kept: every attempt signs with it)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with 'whsec_'")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as err:
        raise ValueError("a signing secret is 'whsec_' and base64") from err


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` sent as ``msg_id`` at ``timestamp``."""
    content = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per valid secret, space-separated.

    While a rotated-out secret still overlaps, receivers holding either secret verify.
    """
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def request_headers(
    secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header a delivery attempt carries."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }
