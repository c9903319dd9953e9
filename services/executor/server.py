"""Wiring: the engine, the worker slot, the gRPC server and the registration with the scheduler."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from comfyfleet.common import metrics
from comfyfleet.common.environments import object_info_text
from comfyfleet.common.grpcserver import RunningServer, registration, serve
from comfyfleet.executor.v1 import executor_pb2_grpc
from services.executor.attempt import AttemptDeps
from services.executor.config import Config
from services.executor.convert import capacity_proto
from services.executor.engine import Engine, build_engine
from services.executor.models import ModelCache
from services.executor.registrar import Identity, Registrar, object_info_of
from services.executor.resources import (
    _gpu_utilization,
    available_memory_bytes,
    resolve_device,
    run_memory_budget,
    weights_budget,
)
from services.executor.serverless import ServerlessWatch, warm_up
from services.executor.servicer import ExecutorServicer
from services.executor.weights import WeightsCache
from services.executor.worker import Worker

if TYPE_CHECKING:
    from services.executor.native.memory import MemoryGuard

log = logging.getLogger(__name__)


@dataclass
class RunningExecutor:
    server: RunningServer
    worker: Worker
    identity: Identity
    registrar: Registrar | None
    watch: ServerlessWatch

    @property
    def port(self) -> int:
        return self.server.port

    async def finished(self) -> str:
        """Returns why, once a serverless executor's share of work is done; never otherwise
        (the service shell stops it on SIGTERM)."""
        return await self.watch.finished()


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
        environment=cfg.declared_environment(),
        object_info_json=_catalog_text(engine),
    )


def _catalog_text(engine: Engine) -> str:
    info = object_info_of(engine)
    return object_info_text(info) if info else ""


@contextlib.asynccontextmanager
async def attempt_deps(cfg: Config, engine: Engine) -> AsyncIterator[AttemptDeps]:
    """What attempts share (the engine's one thread, HTTP, the model caches), until the end.

    The executor id is left empty: the caller knows it (see ``Worker.identify``).
    """
    models = ModelCache(cfg.work_dir / "models", cfg.model_cache_bytes)
    await asyncio.to_thread(models.load)
    weights = await asyncio.to_thread(weights_cache, cfg, engine)
    timeout = aiohttp.ClientTimeout(sock_connect=30, sock_read=cfg.transfer_timeout_s)
    # One engine thread: torch runs on it alone, and a run that ignores its cancel keeps it.
    thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield AttemptDeps(
                "", engine, thread, http, models, cfg.work_dir, cfg.cancel_grace_s, weights
            )
    finally:
        thread.shutdown(wait=False, cancel_futures=True)


def weights_cache(cfg: Config, engine: Engine) -> WeightsCache | None:
    """The loaded-weights cache of an engine that runs models in this process (native only:
    a ComfyUI loads its models itself)."""
    if engine.name != "native":
        return None
    budget = weights_budget(engine.device, cfg.weights_budget_bytes, cfg.weights_budget_fraction)
    log.info("model weights kept loaded on %s up to %d bytes", engine.device, budget)
    return WeightsCache(engine.device, budget)


def memory_guard(cfg: Config, device: str) -> MemoryGuard:
    """The bounds of a native run on ``device``: the memory budget of one allocation (as
    configured, or derived from the memory available now less the weights budget), the memory
    available at each allocation, and the largest input image."""
    # Imported here: the native nodes pull in torch and only a native executor needs them.
    from services.executor.native.memory import MemoryGuard

    weights = weights_budget(device, cfg.weights_budget_bytes, cfg.weights_budget_fraction)
    budget = run_memory_budget(device, cfg.memory_budget_bytes, cfg.memory_budget_fraction, weights)
    log.info("a native run allocates at most %d bytes at once on %s", budget, device)
    return MemoryGuard(
        budget_bytes=budget,
        free_bytes=functools.partial(available_memory_bytes, device),
        max_input_pixels=cfg.max_input_pixels,
    )


@contextlib.asynccontextmanager
async def running_executor(
    cfg: Config, engine: Engine | None = None
) -> AsyncIterator[RunningExecutor]:
    """Serves the ExecutorService until the block ends, then drains, deregisters and stops.

    ``engine`` defaults to the configured one (native or comfyui) on the configured device, and
    is closed at the end when built here (a supervised ComfyUI process stops). The warmup workflow,
    when configured, runs before the server starts: health reports SERVING and the executor
    registers only once it succeeded (it raises WarmupFailed otherwise).
    """
    async with contextlib.AsyncExitStack() as stack:
        if engine is None:
            device = resolve_device(cfg.device)
            memory = memory_guard(cfg, device) if cfg.engine == "native" else None
            engine = await asyncio.to_thread(
                build_engine, cfg.engine, device, cfg.work_dir, cfg.comfyui, memory
            )
            close = getattr(engine, "close", None)
            if close is not None:
                stack.push_async_callback(asyncio.to_thread, close)
        async with _serving(cfg, engine) as running:
            yield running


@contextlib.asynccontextmanager
async def _serving(cfg: Config, engine: Engine) -> AsyncIterator[RunningExecutor]:
    async with attempt_deps(cfg, engine) as deps:
        if cfg.warmup_workflow:
            await _warm_up(cfg, deps)
        worker = Worker(deps)
        watch = ServerlessWatch(cfg.idle_exit_s, cfg.max_jobs)
        worker.on_change = _watching(worker, watch)
        servicer = ExecutorServicer(worker)
        reg = registration(servicer, executor_pb2_grpc, "ExecutorService")
        gpu = functools.partial(_gpu_utilization, engine.device)
        metered = metrics.executor_source(
            engine.device, gpu, lambda: (deps.models.hits, deps.models.misses)
        )
        async with metered, serve(cfg.grpc_addr, [reg], grace=cfg.shutdown_grace_s) as server:
            identity = identity_for(cfg, server.port, engine)
            worker.identify(identity.executor_id)
            log.info("executor %s runs the %s environment", identity.executor_id, cfg.environment)
            async with _registered(cfg, identity, worker) as registrar:
                try:
                    yield RunningExecutor(server, worker, identity, registrar, watch)
                finally:
                    # Finish or hand back the running attempt while still registered, so
                    # the scheduler hears its end before the executor leaves.
                    await worker.drain(cfg.shutdown_grace_s)


async def _warm_up(cfg: Config, deps: AttemptDeps) -> None:
    loop = asyncio.get_running_loop()
    spec, inputs = cfg.warmup_workflow, cfg.warmup_inputs_dir
    warm = functools.partial(warm_up, deps.engine, spec, inputs, cfg.work_dir)
    # On the engine thread, where every later run happens.
    seconds = await loop.run_in_executor(deps.engine_thread, warm)
    log.info("warmup workflow ran in %.2fs", seconds)


def _watching(worker: Worker, watch: ServerlessWatch) -> Callable[[], None]:
    """The slot listener that counts attempts; past the job limit the worker takes no more."""

    def on_change() -> None:
        watch.observe(busy=worker.current is not None)
        if not watch.accepting:
            worker.stop_taking_work()

    return on_change


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
    counted = worker.on_change

    def on_change() -> None:
        counted()
        registrar.nudge()

    worker.on_change = on_change
    async with registrar:
        yield registrar
