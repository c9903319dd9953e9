"""Wait for a condition by polling it, never with a bare sleep(n)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


# The signature is the one STYLE.md gives every test: a deadline, not asyncio.timeout.
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.05,
) -> T:
    """Awaits `check` until it stops raising AssertionError; re-raises the last one at timeout.

    Returns what `check` returned the first time it passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


def eventually_sync(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """The blocking twin of `eventually`, for sync tests and fixtures."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)
