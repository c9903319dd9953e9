"""One attempt of an execution: download its inputs, run the workflow, upload its outputs.

The engine runs on a worker thread (torch must not block the event loop); its node events
cross to the loop with ``call_soon_threadsafe``, so they reach the stream in the order the
engine emitted them and before the result. Whatever ends the attempt (success, a failing node,
a cancel, the run timeout, a broken URL, shutdown), exactly one final update is emitted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import shutil
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from comfyfleet.common.errors import (
    Cancelled,
    ComfyfleetError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from comfyfleet.workflow.budget import BudgetExceeded, BudgetReason, InputImageTooLarge
from comfyfleet.workflow.io import UnsafePathError, safe_relative
from comfyfleet.workflow.runner import CancelToken, full_type_name
from comfyfleet.workflow.validate import comfy_error_metadata
from services.executor.engine import (
    Engine,
    EngineJob,
    EngineResult,
    NodeEvent,
    NodeRaised,
    ProducedFile,
    RunInterrupted,
    WorkflowRejected,
    tenant_scope,
)
from services.executor.models import ModelCache, ModelSpec
from services.executor.resources import RunUsage, UsageMeter
from services.executor.telemetry import AttemptTelemetry
from services.executor.transfer import download, upload
from services.executor.weights import LoadedWeights, WeightsCache, loads_weights

log = logging.getLogger(__name__)

# Uploads of one attempt in flight at once: enough to hide latency, few enough not to
# saturate the link the next attempt's downloads share.
UPLOAD_CONCURRENCY = 4
# Exception types a retry on another machine (or after the memory is freed) may cure.
OUT_OF_MEMORY_TYPES = frozenset({"torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError"})
# What a node refused to allocate: the same workflow fails the same way anywhere, so these
# are workflow errors, never retried, with reasons of their own.
BUDGET_REASONS = {
    full_type_name(BudgetExceeded): "MEMORY_BUDGET_EXCEEDED",
    full_type_name(InputImageTooLarge): BudgetReason.INPUT_IMAGE_TOO_LARGE.value,
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    url: str
    size_bytes: int


@dataclass(frozen=True)
class SlotSpec:
    index: int
    url: str


@dataclass(frozen=True)
class AttemptSpec:
    """What the scheduler asked for, in domain terms."""

    execution_id: str
    attempt: int
    tenant: str
    workflow_json: str
    inputs: tuple[InputSpec, ...]
    models: tuple[ModelSpec, ...]
    output_slots: tuple[SlotSpec, ...]
    # None: no limit beyond the scheduler's own lease.
    run_timeout_s: float | None

    @property
    def key(self) -> tuple[str, int]:
        return (self.execution_id, self.attempt)


@dataclass(frozen=True)
class Started:
    executor_id: str
    device: str


@dataclass(frozen=True)
class UploadedFile:
    slot: int
    node_id: str
    filename: str
    subfolder: str
    kind: str
    content_type: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Completed:
    outputs: tuple[UploadedFile, ...]
    execution_time_s: float
    usage: RunUsage
    cached_nodes: tuple[str, ...]


@dataclass(frozen=True)
class Failed:
    error: ComfyfleetError

    @property
    def retryable(self) -> bool:
        return self.error.retryable


Update = Started | NodeEvent | Completed | Failed


@dataclass(frozen=True)
class AttemptDeps:
    """What every attempt shares: the engine and its one thread, HTTP, the model caches."""

    executor_id: str
    engine: Engine
    engine_thread: concurrent.futures.ThreadPoolExecutor
    http: aiohttp.ClientSession
    models: ModelCache
    work_dir: Path
    cancel_grace_s: float
    # Loaded model weights, for an engine that runs models in this process (native).
    weights: WeightsCache | None = None


def validate_spec(spec: AttemptSpec) -> None:
    """Refuses requests no attempt could serve, before the slot is taken."""
    problems: list[tuple[str, str]] = []
    if not spec.execution_id:
        problems.append(("execution_id", "must be set"))
    if spec.attempt < 1:
        problems.append(("attempt", "must be at least 1"))
    if not spec.workflow_json.strip():
        problems.append(("workflow_json", "must be set"))
    for i, ref in enumerate(spec.inputs):
        try:
            safe_relative(ref.name)
        except UnsafePathError as err:
            problems.append((f"inputs[{i}].name", str(err)))
    for i, model in enumerate(spec.models):
        if len(model.sha256) != 64 or any(c not in "0123456789abcdef" for c in model.sha256):
            problems.append((f"models[{i}].sha256", "must be 64 lowercase hex digits"))
    if spec.run_timeout_s is not None and spec.run_timeout_s <= 0:
        problems.append(("run_timeout", "must be positive when set"))
    if problems:
        violations = [FieldViolation(field, text) for field, text in problems]
        raise InvalidArgument("the execute request is invalid", violations)


class Attempt:
    """Runs one :class:`AttemptSpec`; read its updates with :meth:`updates`."""

    def __init__(
        self, spec: AttemptSpec, deps: AttemptDeps, on_free: Callable[[], None] = lambda: None
    ) -> None:
        self.spec = spec
        self._deps = deps
        # Called once the engine no longer runs the attempt: the slot is free again.
        self._on_free = on_free
        self._cancel = CancelToken()
        self._stop_reason: ComfyfleetError | None = None
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._closed = False
        self._engine_future: asyncio.Future[EngineResult] | None = None
        self._work: asyncio.Task[Completed] | None = None
        self._dir = deps.work_dir / "attempts" / uuid.uuid4().hex
        # Set once the final update is emitted; the task may still wait for the engine.
        self.reported = asyncio.Event()
        # Made here, inside the Execute call's span: node spans become its children.
        self._telemetry = AttemptTelemetry(spec.execution_id, spec.attempt)
        self.task = asyncio.create_task(self._run(), name=f"attempt {spec.key}")

    def stop(self, reason: ComfyfleetError) -> None:
        """Interrupts the attempt; ``reason`` becomes its failure unless it already ended."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._cancel.cancel()
        if self._work is not None:
            self._work.cancel()

    async def updates(self) -> AsyncGenerator[Update, None]:
        """Every update until the final one. Leaving early (the caller went away) cancels."""
        try:
            while (update := await self._queue.get()) is not None:
                yield update
        finally:
            if not self.reported.is_set():
                self.stop(Cancelled("the scheduler stopped listening", reason="STREAM_CLOSED"))

    def _emit(self, update: Update | None) -> None:
        if isinstance(update, NodeEvent):
            self._telemetry.node(update.node_id, update.class_type, update.state)
        if not self._closed:
            self._queue.put_nowait(update)

    async def _run(self) -> None:
        log.info("attempt %s of %s started", self.spec.attempt, self.spec.execution_id)
        self._emit(Started(self._deps.executor_id, self._deps.engine.device))
        self._work = asyncio.create_task(self._steps())
        if self._stop_reason is not None:
            self._work.cancel()
        await asyncio.wait({self._work}, timeout=self.spec.run_timeout_s)
        if not self._work.done():
            self.stop(
                DeadlineExceeded(f"the run exceeded its {self.spec.run_timeout_s:g}s timeout")
            )
            await asyncio.wait({self._work})
        outcome = self._outcome(self._work)
        _log_outcome(self.spec, outcome)
        self._telemetry.finished(outcome.error if isinstance(outcome, Failed) else None)
        # Free the slot before the scheduler hears the end, so its next dispatch is taken;
        # unless the engine still runs (it ignored the cancel): then report first.
        engine_idle = self._engine_future is None or self._engine_future.done()
        if engine_idle:
            await self._settle()
        self._emit(outcome)
        self._emit(None)
        self._closed = True
        self.reported.set()
        if not engine_idle:
            await self._settle()

    def _outcome(self, work: asyncio.Task[Completed]) -> Completed | Failed:
        if not work.cancelled() and work.exception() is None:
            return work.result()
        if self._stop_reason is not None:
            return Failed(self._stop_reason)
        if work.cancelled():
            return Failed(Cancelled("the attempt was cancelled"))
        error = work.exception()
        assert error is not None
        return Failed(failure_of(error))

    async def _settle(self) -> None:
        """Waits for the engine thread, clears the attempt's files and frees the slot."""
        future = self._engine_future
        if future is not None:
            await asyncio.wait({future})
            if not future.cancelled() and future.exception() is not None:
                log.debug("engine of %s ended with %r", self.spec.key, future.exception())
        await asyncio.to_thread(shutil.rmtree, self._dir, True)
        self._on_free()

    async def _steps(self) -> Completed:
        spec, deps = self.spec, self._deps
        input_dir = self._dir / "inputs"
        await self._download_inputs(input_dir)
        loading = time.perf_counter()
        async with (
            deps.models.holding(deps.http, spec.models) as models,
            self._loaded(models) as weights,
        ):
            self._telemetry.models_ready(time.perf_counter() - loading, len(spec.models))
            # The engine's caches are per tenant: nothing one tenant's run computed or saved
            # may come back to another tenant.
            job = EngineJob(
                spec.workflow_json,
                input_dir,
                models,
                weights,
                cache_scope=tenant_scope(spec.tenant),
            )
            started = time.perf_counter()
            # A comfyui engine runs the workflow in ComfyUI's process, not this one.
            in_process = deps.engine.name == "native"
            async with UsageMeter(deps.engine.device, in_process=in_process) as meter:
                result = await self._run_engine(job)
            seconds = time.perf_counter() - started
        uploaded = await self._upload(result.files)
        return Completed(uploaded, seconds, meter.usage(), result.cached_nodes)

    @contextlib.asynccontextmanager
    async def _loaded(
        self, paths: Mapping[str, Path]
    ) -> AsyncIterator[Mapping[str, LoadedWeights]]:
        """The job's safetensors models loaded through the weights cache, held for the run."""
        cache = self._deps.weights
        wanted = {
            m.key: (m.sha256, paths[m.key]) for m in self.spec.models if loads_weights(m.name)
        }
        if cache is None or not wanted:
            yield {}
            return
        loading = asyncio.ensure_future(asyncio.to_thread(cache.acquire_all, wanted))
        try:
            held = await asyncio.shield(loading)
        except asyncio.CancelledError:
            # The load runs on in its thread: what it ends up holding must be let go.
            await asyncio.wait({loading})
            if not loading.cancelled() and loading.exception() is None:
                cache.release([w.sha256 for w in loading.result().values()])
            raise
        try:
            yield held
        finally:
            cache.release([w.sha256 for w in held.values()])

    async def _download_inputs(self, input_dir: Path) -> None:
        async def fetch(ref: InputSpec) -> None:
            got = await download(self._deps.http, ref.url, input_dir / safe_relative(ref.name))
            if ref.size_bytes and got.size != ref.size_bytes:
                raise Unavailable(
                    f"input {ref.name} arrived with {got.size} bytes, expected {ref.size_bytes}",
                    reason="INPUT_DOWNLOAD_FAILED",
                )

        await asyncio.to_thread(input_dir.mkdir, parents=True, exist_ok=True)
        await asyncio.gather(*(fetch(ref) for ref in self.spec.inputs))

    async def _run_engine(self, job: EngineJob) -> EngineResult:
        loop = asyncio.get_running_loop()

        def on_event(event: NodeEvent) -> None:
            loop.call_soon_threadsafe(self._emit, event)

        engine = self._deps.engine
        future = loop.run_in_executor(
            self._deps.engine_thread, engine.run, job, on_event, self._cancel
        )
        self._engine_future = future
        try:
            # Shielded: cancelling this await must not forget the thread, which runs on.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self._cancel.cancel()
            await asyncio.wait({future}, timeout=self._deps.cancel_grace_s)
            raise

    async def _upload(self, files: Sequence[ProducedFile]) -> tuple[UploadedFile, ...]:
        slots = sorted(self.spec.output_slots, key=lambda s: s.index)
        if len(files) > len(slots):
            raise FailedPrecondition(
                f"the workflow produced {len(files)} output files but only "
                f"{len(slots)} output slots were given",
                reason="OUTPUT_SLOTS_EXHAUSTED",
                metadata={"outputs": str(len(files)), "slots": str(len(slots))},
            )
        limit = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def put(slot: SlotSpec, file: ProducedFile) -> UploadedFile:
            async with limit:
                digest = await asyncio.to_thread(lambda: hashlib.sha256(file.data).hexdigest())
                await upload(self._deps.http, slot.url, file.data, file.content_type)
            return UploadedFile(
                slot.index,
                file.node_id,
                file.filename,
                file.subfolder,
                file.kind,
                file.content_type,
                len(file.data),
                digest,
            )

        return tuple(await asyncio.gather(*(put(s, f) for s, f in zip(slots, files, strict=False))))


def _log_outcome(spec: AttemptSpec, outcome: Completed | Failed) -> None:
    if isinstance(outcome, Completed):
        log.info(
            "attempt %s of %s completed in %.2fs with %d outputs",
            spec.attempt,
            spec.execution_id,
            outcome.execution_time_s,
            len(outcome.outputs),
        )
    else:
        log.info(
            "attempt %s of %s failed (%s, retryable=%s): %s",
            spec.attempt,
            spec.execution_id,
            outcome.error.reason,
            outcome.retryable,
            outcome.error.message,
        )


def failure_of(err: BaseException) -> ComfyfleetError:
    """The error an attempt reports for what stopped it; it decides ``retryable``."""
    if isinstance(err, ComfyfleetError):
        return err
    if isinstance(err, NodeRaised):
        return _node_failure(err)
    if isinstance(err, WorkflowRejected):
        # ComfyUI's own answer goes along, as the gateway's checks send it, so REST clients
        # get its ``node_errors`` object.
        body = err.comfy_body
        metadata = comfy_error_metadata(body) if body is not None else None
        return InvalidArgument(
            err.message, err.violations, reason="WORKFLOW_INVALID", metadata=metadata
        )
    if isinstance(err, RunInterrupted):
        return Cancelled("the run was interrupted")
    if isinstance(err, OSError):
        return Unavailable(f"executor I/O error: {err}", reason="EXECUTOR_IO_ERROR")
    log.error("attempt failed unexpectedly", exc_info=err)
    return Internal(f"the executor failed: {type(err).__name__}: {err}", reason="EXECUTOR_ERROR")


def _node_failure(err: NodeRaised) -> ComfyfleetError:
    metadata = {
        "node_id": err.node_id,
        "node_type": err.node_type,
        "exception_type": err.exception_type,
        "exception_message": err.exception_message,
    }
    message = (
        f"node {err.node_id} ({err.node_type}) raised {err.exception_type}: {err.exception_message}"
    )
    if err.exception_type in OUT_OF_MEMORY_TYPES:
        return ResourceExhausted(message, reason="NODE_OUT_OF_MEMORY", metadata=metadata)
    reason = BUDGET_REASONS.get(err.exception_type, "NODE_EXECUTION_FAILED")
    return FailedPrecondition(message, reason=reason, metadata=metadata)
