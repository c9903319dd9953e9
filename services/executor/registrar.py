"""Keeping the executor registered with the scheduler: register, heartbeat, deregister.

The scheduler forgets an executor after three missed heartbeats, or when it restarts; either
way the executor registers again: when a heartbeat is answered with ``reregister``, and after
any call that did not reach the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from comfyfleet.common.environments import NATIVE
from comfyfleet.common.grpcserver import channel
from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from services.executor.engine import Engine

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Identity:
    """What the executor registers as."""

    executor_id: str
    address: str
    provider: str
    engine: str
    node_types: tuple[str, ...] = field(repr=False)
    # The environment it runs, as it declares it (its spec, name and engine).
    environment: environments_pb2.Environment = field(
        default_factory=lambda: environments_pb2.Environment(name=NATIVE, engine=NATIVE),
        repr=False,
        compare=False,
    )
    # The engine's node catalog (``GET /object_info``) as JSON text: the environment's catalog.
    object_info_json: str = field(default="", repr=False, compare=False)


def object_info_of(engine: Engine) -> Mapping[str, Any]:
    """The engine's node catalog as ``GET /object_info`` gives it: the native catalog, or the
    one a ComfyUI answered when the engine started; empty when the engine cannot say."""
    if engine.name == NATIVE:
        return NATIVE_CATALOG.object_info()
    read = getattr(engine, "object_info", None)
    return read() if callable(read) else {}


class Registrar:
    """``async with Registrar(...)``: registered and heartbeating inside, deregistered after."""

    def __init__(
        self,
        scheduler_addr: str,
        identity: Identity,
        capacity: Callable[[], scheduler_pb2.ExecutorCapacity],
        *,
        retry_s: float,
    ) -> None:
        self.identity = identity
        self._capacity = capacity
        self._retry_s = retry_s
        self._channel = channel(scheduler_addr)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.registered = False

    async def __aenter__(self) -> Registrar:
        self._task = asyncio.create_task(self._loop(), name="executor registrar")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self._deregister()
        finally:
            await self._channel.close()

    def nudge(self) -> None:
        """Sends a heartbeat now rather than at the next interval (the capacity changed)."""
        self._wake.set()

    async def _loop(self) -> None:
        interval = self._retry_s
        while not self._stopping:
            try:
                if not self.registered:
                    interval = await self._register()
                elif not await self._heartbeat():
                    continue  # the scheduler forgot us: register again at once
            except grpc.aio.AioRpcError as err:
                self.registered = False
                interval = self._retry_s
                log.warning("scheduler unreachable (%s): retrying in %gs", err.code(), interval)
            except Exception:
                self.registered = False
                interval = self._retry_s
                log.exception("registration failed: retrying in %gs", interval)
            await self._pause(interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _register(self) -> float:
        me = self.identity
        executor = scheduler_pb2.Executor(
            id=me.executor_id,
            address=me.address,
            provider=me.provider,
            engine=me.engine,
            node_types=list(me.node_types),
            capacity=self._capacity(),
            environment=me.environment.name,
        )
        request = scheduler_pb2.RegisterExecutorRequest(
            executor=executor, environment=me.environment, object_info_json=me.object_info_json
        )
        response = await self._stub.RegisterExecutor(request, timeout=CALL_TIMEOUT_S)
        self.registered = True
        log.info(
            "registered %s at %s with the scheduler (environment %s)",
            me.executor_id,
            me.address,
            me.environment.name,
        )
        interval = response.heartbeat_interval_seconds
        return interval if interval > 0 else self._retry_s

    async def _heartbeat(self) -> bool:
        """True while the scheduler still knows the executor."""
        request = scheduler_pb2.HeartbeatRequest(
            executor_id=self.identity.executor_id, capacity=self._capacity()
        )
        response = await self._stub.Heartbeat(request, timeout=CALL_TIMEOUT_S)
        if response.reregister:
            self.registered = False
            log.info("the scheduler asked %s to register again", self.identity.executor_id)
        return not response.reregister

    async def _deregister(self) -> None:
        request = scheduler_pb2.DeregisterExecutorRequest(executor_id=self.identity.executor_id)
        try:
            await self._stub.DeregisterExecutor(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            # The registration lapses by itself after three missed heartbeats.
            log.warning("could not deregister from the scheduler: %s", err.code())
        else:
            log.info("deregistered %s", self.identity.executor_id)
        self.registered = False
