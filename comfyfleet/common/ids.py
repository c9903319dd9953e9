"""Identifiers: a type prefix and a time-ordered, random, lowercase base32 body."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _next_body(millis: int) -> int:
    """A ULID body that sorts after every body this process made before (monotonic ULID).

    Within one millisecond the random part of the previous body is incremented, so ids
    made one after another list in the order they were made; a clock that steps back
    keeps counting from the last body instead of going back with it.
    """
    global _last
    fresh = (millis << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
    with _lock:
        if fresh >> _RANDOM_BITS <= _last >> _RANDOM_BITS:
            fresh = _last + 1 + int.from_bytes(os.urandom(2), "big")
        _last = fresh
    return fresh


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 chars: 48 bits of milliseconds then 80 random bits (a ULID body).

    Ids made by one process sort in the order they were made, even within a millisecond.
    """
    return f"{prefix}_{_base32(_next_body(time.time_ns() // 1_000_000), 26)}"
