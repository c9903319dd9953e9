"""An event loop on a thread of its own, for a caller that blocks: the comfyui engine.

The engine's ``run`` is a blocking call on the executor's engine thread. Running each run's
async work with ``asyncio.run`` made a loop, a thread pool and an HTTP session (with its
connections) per job: milliseconds of CPU each time. One loop, started once, serves every
run instead, and what lives on it (the engine's HTTP session) is kept between runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
# A started loop, and the event that ends it.
_Running = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class LoopThread:
    """One event loop on a daemon thread, from :meth:`start` until :meth:`stop`.

    ``on_stop`` is awaited on the loop as it stops, once the tasks still running there were
    cancelled: the place to close what lives on the loop.
    """

    def __init__(self, name: str, on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        self.name = name
        self._on_stop = on_stop
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set on the loop to end it.
        self._stopping: asyncio.Event | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The thread while the loop runs; None before :meth:`start` and after :meth:`stop`."""
        return self._thread

    def start(self) -> asyncio.AbstractEventLoop:
        """Starts the loop's thread unless it runs; returns the loop once it runs."""
        with self._lock:
            if self._loop is None:
                started: concurrent.futures.Future[_Running] = concurrent.futures.Future()
                thread = threading.Thread(
                    target=asyncio.run, args=(self._serve(started),), name=self.name, daemon=True
                )
                thread.start()
                self._loop, self._stopping = started.result()
                self._thread = thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on the loop (starting it if need be) and blocks until it ends.

        Raises what ``coro`` raised, or :class:`concurrent.futures.CancelledError` when the
        loop stopped first.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{self.name}: run() called on the loop's own thread")
        loop = self.start()
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def stop(self) -> None:
        """Cancels what still runs on the loop, awaits ``on_stop`` there, ends the thread.

        Blocks until the thread ended (unless called on it). A later :meth:`run` or
        :meth:`start` starts a new loop.
        """
        with self._lock:
            loop, thread, stopping = self._loop, self._thread, self._stopping
            self._loop = self._thread = self._stopping = None
        if loop is None or thread is None or stopping is None:
            return
        try:
            loop.call_soon_threadsafe(stopping.set)
        except RuntimeError:  # the loop is already closed (the interpreter is exiting)
            return
        if thread is not threading.current_thread():
            thread.join()

    async def _serve(self, started: concurrent.futures.Future[_Running]) -> None:
        # asyncio.run, which runs this, then ends the loop's default executor and closes it.
        stopping = asyncio.Event()
        started.set_result((asyncio.get_running_loop(), stopping))
        await stopping.wait()
        # The runs first, so that none goes on with what on_stop closes.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self._on_stop is not None:
            try:
                await self._on_stop()
            except Exception:
                log.exception("%s: closing what lived on the loop failed", self.name)
