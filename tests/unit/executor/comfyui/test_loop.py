"""The event loop thread the comfyui engine runs its async work on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from services.executor.comfyui.loop import LoopThread


async def where() -> threading.Thread:
    await asyncio.sleep(0)
    return threading.current_thread()


async def fails() -> None:
    raise ValueError("from the loop")


def test_runs_share_one_thread_until_stop() -> None:
    loop = LoopThread("test-loop")
    assert loop.thread is None

    first, second = loop.run(where()), loop.run(where())

    assert first is second is loop.thread
    assert first.name == "test-loop" and first.daemon and first is not threading.current_thread()
    with pytest.raises(ValueError, match="from the loop"):
        loop.run(fails())
    assert loop.run(where()) is first
    loop.stop()
    assert loop.thread is None and not first.is_alive()
    # A later run starts another loop.
    again = loop.run(where())
    assert again is not first and again.is_alive()
    loop.stop()
    assert not again.is_alive()
    loop.stop()


def test_stop_cancels_what_runs_then_awaits_on_stop() -> None:
    order: list[str] = []
    started = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            order.append("run cancelled")

    async def on_stop() -> None:
        order.append("on_stop")

    loop = LoopThread("test-loop", on_stop=on_stop)
    with concurrent.futures.ThreadPoolExecutor(1) as caller:
        running = caller.submit(loop.run, forever())
        assert started.wait(10)
        loop.stop()
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(10)
    assert order == ["run cancelled", "on_stop"]


def test_run_on_the_loops_own_thread_is_refused() -> None:
    loop = LoopThread("test-loop")

    async def nested() -> None:
        loop.run(where())

    try:
        with pytest.raises(RuntimeError, match="own thread"):
            loop.run(nested())
    finally:
        loop.stop()
