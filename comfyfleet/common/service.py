"""The shell every service process runs in: ``python -m services.<name>`` is one call.

    if __name__ == "__main__":
        run_service("scheduler", Config.from_env, running_scheduler)

``run_service`` configures logging once, in one format (``COMFYFLEET_LOG_LEVEL``, INFO by
default); reads the configuration (a bad setting is one line and exit status 2); sets up
telemetry and shuts it down at the end, so spans and metrics still buffered are sent; enters
the service's composition root (an async context manager whose exit is its graceful stop:
stop taking work, finish or hand back what it holds, drain); waits for SIGTERM or SIGINT, or
for the service to end by itself (a serverless executor whose share of work is done); and
exits 0 after a clean stop, 1 when the service failed (for one of the ``refusals`` it names,
such as a warmup workflow that failed, in one line without a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import NoReturn, Protocol, TypeVar, runtime_checkable

from comfyfleet.common.config import ConfigError
from comfyfleet.common.grpcserver import wait_for_shutdown_signal
from comfyfleet.common.telemetry import TelemetryConfig, setup_telemetry

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger(__name__)

C = TypeVar("C")
R = TypeVar("R", bound="Serving")


class Serving(Protocol):
    """What a composition root yields: the port it serves on."""

    @property
    def port(self) -> int: ...


@runtime_checkable
class EndsByItself(Protocol):
    """A service that may stop without a signal: ``finished()`` returns why it did."""

    async def finished(self) -> str: ...


def configure_logging() -> None:
    """The one log format of every process; the level from ``COMFYFLEET_LOG_LEVEL``."""
    level = os.environ.get("COMFYFLEET_LOG_LEVEL", "").strip().upper() or "INFO"
    known = isinstance(logging.getLevelName(level), int)
    logging.basicConfig(level=level if known else "INFO", format=LOG_FORMAT)
    if not known:
        log.warning("COMFYFLEET_LOG_LEVEL=%r is not a log level: logging at INFO", level)


def run_process(
    name: str,
    load: Callable[[], C],
    main: Callable[[C], int],
    refusals: tuple[type[Exception], ...] = (),
) -> NoReturn:
    """Runs ``main(config)`` as the process ``name``: logging, configuration, telemetry and
    the exit status around it. For a process that drives its own loop (the RunPod worker)."""
    configure_logging()
    try:
        cfg = load()
        telemetry = setup_telemetry(name, TelemetryConfig.from_env())
    except ConfigError as err:
        log.error("%s not started: %s", name, err)
        sys.exit(EXIT_CONFIG)
    try:
        code = main(cfg)
    except refusals as err:
        log.error("%s not started: %s", name, err)
        code = EXIT_FAILED
    finally:
        telemetry.shutdown()
    sys.exit(code)


def run_service(
    name: str,
    load: Callable[[], C],
    start: Callable[[C], AbstractAsyncContextManager[R]],
    refusals: tuple[type[Exception], ...] = (),
) -> NoReturn:
    """Serves ``start(load())`` until SIGTERM or SIGINT (or its own end), then stops it."""

    def serve(cfg: C) -> int:
        return asyncio.run(serve_until_stopped(name, start(cfg)))

    run_process(name, load, serve, refusals)


async def serve_until_stopped(name: str, root: AbstractAsyncContextManager[R]) -> int:
    async with root as service:
        log.info("%s serving on port %d", name, service.port)
        reason = await _stopped(service)
        log.info("%s stopping after %s", name, reason)
    log.info("%s stopped", name)
    return EXIT_OK


async def _stopped(service: Serving) -> str:
    """Why the service is to stop: a shutdown signal, or its own end."""
    waits: dict[str, Awaitable[object]] = {"a shutdown signal": wait_for_shutdown_signal()}
    if isinstance(service, EndsByItself):
        waits["its own end"] = service.finished()
    tasks = {asyncio.ensure_future(wait): why for why, wait in waits.items()}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    ended = done.pop()
    result = ended.result()
    return result if isinstance(result, str) else tasks[ended]
