"""API keys: ``cfk_<id>_<secret><checksum>``.

- ``cfk_`` says what the string is, so secret scanners and people recognise it;
- ``<id>`` (16 base32 chars, 80 bits) is public and finds the key's row without a scan;
- ``<secret>`` (32 base32 chars, 160 bits) is never stored, only its sha256;
- ``<checksum>`` (6 base32 chars of a CRC-32 over the rest) rejects typos before any lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "cfk"
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_LEN = 16
_SECRET_LEN = 32
_CHECKSUM_LEN = 6


def _random_base32(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _checksum(text: str) -> str:
    value = zlib.crc32(text.encode())
    return "".join(_ALPHABET[(value >> (5 * i)) & 31] for i in range(_CHECKSUM_LEN))


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str

    def secret_sha256(self) -> bytes:
        return hashlib.sha256(self.secret.encode()).digest()


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the whole string to show once, and what to store."""

    key_id: str
    token: str
    secret_sha256: bytes


def generate() -> NewKey:
    key_id = _random_base32(_ID_LEN)
    secret = _random_base32(_SECRET_LEN)
    body = f"{PREFIX}_{key_id}_{secret}"
    token = body + _checksum(body)
    return NewKey(key_id, token, hashlib.sha256(secret.encode()).digest())


def parse(token: str) -> ParsedKey | None:
    """The key's parts, or None when the string cannot be one of our keys."""
    expected_len = len(PREFIX) + 2 + _ID_LEN + _SECRET_LEN + _CHECKSUM_LEN
    if len(token) != expected_len or not token.startswith(PREFIX + "_"):
        return None
    body, checksum = token[:-_CHECKSUM_LEN], token[-_CHECKSUM_LEN:]
    if not hmac.compare_digest(_checksum(body), checksum):
        return None
    _, key_id, secret = body.split("_", 2)
    if len(key_id) != _ID_LEN or len(secret) != _SECRET_LEN:
        return None
    return ParsedKey(key_id, secret)


def matches(parsed: ParsedKey, stored_sha256: bytes) -> bool:
    """Constant-time comparison of the presented secret with the stored hash."""
    return hmac.compare_digest(parsed.secret_sha256(), stored_sha256)
