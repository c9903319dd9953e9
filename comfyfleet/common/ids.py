"""Identifiers: a type prefix and a time-ordered, random, lowercase base32 body."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 chars: 48 bits of milliseconds then 80 random bits (a ULID body)."""
    millis = time.time_ns() // 1_000_000
    body = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_base32(body, 26)}"
