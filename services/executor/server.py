"""Wiring: the engine, the worker slot, the gRPC server and the registration with the scheduler."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from comfyfleet.common.grpcserver import RunningServer, registration, serve
from comfyfleet.executor.v1 import executor_pb2_grpc
from services.executor.attempt import AttemptDeps
from services.executor.config import Config
from services.executor.convert import capacity_proto
from services.executor.engine import Engine, build_engine
from services.executor.models import ModelCache
from services.executor.registrar import Identity, Registrar
from services.executor.resources import resolve_device
from services.executor.servicer import ExecutorServicer
from services.executor.worker import Worker

ENGINE = "native"


@dataclass
class RunningExecutor:
    server: RunningServer
    worker: Worker
    identity: Identity
    registrar: Registrar | None

    @property
    def port(self) -> int:
        return self.server.port


def _host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def identity_for(cfg: Config, port: int, engine: Engine) -> Identity:
    """The executor's id and dial-back address, derived from the bound port when not set."""
    host, _ = _host_and_port(cfg.grpc_addr)
    if host in {"", "0.0.0.0", "::"}:
        host = socket.gethostname()
    return Identity(
        executor_id=cfg.executor_id or f"{socket.gethostname()}-{port}",
        address=cfg.advertise_addr or f"{host}:{port}",
        provider=cfg.provider,
        engine=engine.name,
        node_types=tuple(engine.node_types()),
    )


@contextlib.asynccontextmanager
async def running_executor(
    cfg: Config, engine: Engine | None = None
) -> AsyncIterator[RunningExecutor]:
    """Serves the ExecutorService until the block ends, then drains, deregisters and stops.

    ``engine`` defaults to the native engine on the configured device.
    """
    if engine is None:
        device = resolve_device(cfg.device)
        engine = await asyncio.to_thread(build_engine, ENGINE, device, cfg.work_dir)
    models = ModelCache(cfg.work_dir / "models", cfg.model_cache_bytes)
    await asyncio.to_thread(models.load)
    timeout = aiohttp.ClientTimeout(sock_connect=30, sock_read=cfg.transfer_timeout_s)
    # One engine thread: torch runs on it alone, and a run that ignores its cancel keeps it.
    thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            deps = AttemptDeps("", engine, thread, http, models, cfg.work_dir, cfg.cancel_grace_s)
            worker = Worker(deps)
            servicer = ExecutorServicer(worker)
            reg = registration(servicer, executor_pb2_grpc, "ExecutorService")
            async with serve(cfg.grpc_addr, [reg], grace=cfg.shutdown_grace_s) as server:
                identity = identity_for(cfg, server.port, engine)
                worker.identify(identity.executor_id)
                async with _registered(cfg, identity, worker) as registrar:
                    try:
                        yield RunningExecutor(server, worker, identity, registrar)
                    finally:
                        # Finish or hand back the running attempt while still registered, so
                        # the scheduler hears its end before the executor leaves.
                        await worker.drain(cfg.shutdown_grace_s)
    finally:
        thread.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def _registered(
    cfg: Config, identity: Identity, worker: Worker
) -> AsyncIterator[Registrar | None]:
    if not cfg.register:
        yield None
        return

    registrar = Registrar(
        cfg.scheduler_addr,
        identity,
        lambda: capacity_proto(worker.capacity()),
        retry_s=cfg.register_retry_s,
    )
    worker.on_change = registrar.nudge
    async with registrar:
        yield registrar
