"""The one seam between the executor service and the engines that run workflows.

The service sees an :class:`Engine`: a blocking ``run`` called on a worker thread, reporting
:class:`NodeEvent`s through a callback and checking a cancel flag. The native torch engine
plugs in here; a ComfyUI engine can plug in behind the same interface later.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from comfyfleet.common.errors import FieldViolation
from comfyfleet.workflow.graph import Workflow
from comfyfleet.workflow.io import DirectoryInputStore, OutputFile, counter_after, safe_relative
from comfyfleet.workflow.runner import (
    SHARED_SCOPE,
    CancelToken,
    ExecutionEvent,
    NodeFinished,
    NodesCached,
    NodeStarted,
    NodeStatus,
    OutputRecord,
    RunResult,
    RunStatus,
)
from comfyfleet.workflow.runner import NodeProgress as RunnerProgress
from comfyfleet.workflow.schedule import execution_order
from comfyfleet.workflow.validate import ValidationResult, describe

if TYPE_CHECKING:
    from services.executor.comfyui import ComfyUISettings
    from services.executor.native import NativeEngine
    from services.executor.native.memory import MemoryGuard
    from services.executor.weights import LoadedWeights


class NodeState(StrEnum):
    RUNNING = "running"
    PROGRESS = "progress"
    DONE = "done"
    CACHED = "cached"


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """Something that happened to one node; ``nodes_done`` counts cached nodes too."""

    state: NodeState
    node_id: str
    class_type: str
    nodes_done: int
    nodes_total: int
    value: int = 0
    max: int = 0
    # Seconds the node ran, on DONE.
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ProducedFile:
    """One output file. ``kind`` is the key ComfyUI reports it under ("images", "latents")."""

    node_id: str
    filename: str
    subfolder: str
    kind: str
    content_type: str
    data: bytes


def tenant_scope(tenant: str) -> str:
    """The cache scope of a tenant's jobs (never the shared scope, whatever the name)."""
    return f"tenant:{tenant}"


@dataclass(frozen=True)
class EngineJob:
    """What one run needs: the workflow text, its input files and its model files."""

    workflow_json: str
    input_dir: Path
    # Model files by "<folder>/<name>", as the workflow names them.
    models: Mapping[str, Path] = field(default_factory=dict)
    # The same models' weights, already loaded on the engine's device (native engine only),
    # by "<folder>/<name>"; held from eviction while the run lasts.
    weights: Mapping[str, LoadedWeights] = field(default_factory=dict)
    # Whose run this is, for the engine's caches: a job never gets anything a job of another
    # scope computed or saved (loaded model weights aside). A tenant's jobs take
    # tenant_scope(tenant); SHARED_SCOPE is for work no tenant asked for (an operator's
    # warmup, a local run), whose intermediate results every scope may reuse.
    cache_scope: str = SHARED_SCOPE


@dataclass(frozen=True)
class EngineResult:
    files: tuple[ProducedFile, ...]
    cached_nodes: tuple[str, ...]


class EngineError(Exception):
    """Base of what an engine raises about a workflow (never about infrastructure)."""


class WorkflowRejected(EngineError):
    """The workflow does not validate against the engine's nodes.

    ``comfy_body`` is ComfyUI's ``POST /prompt`` answer (``{"error", "node_errors"}``) when
    known, passed on so clients get the ``node_errors`` object they know from ComfyUI.
    """

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        comfy_body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        self.comfy_body = comfy_body


class NodeRaised(EngineError):
    """A node raised while it ran."""

    def __init__(
        self,
        node_id: str,
        node_type: str,
        exception_type: str,
        exception_message: str,
        traceback: str = "",
    ) -> None:
        super().__init__(
            f"node {node_id} ({node_type}) failed: {exception_type}: {exception_message}"
        )
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback


class RunInterrupted(EngineError):
    """The run stopped at a cancel check."""


OnEvent = Callable[[NodeEvent], None]


class Engine(Protocol):
    """Runs workflows on one device, one at a time, keeping its node cache between runs."""

    @property
    def name(self) -> str:
        """What the executor registers as its engine: "native" or "comfyui"."""
        ...

    @property
    def device(self) -> str:
        """The torch device runs use, for example "cuda:0" or "cpu"."""
        ...

    def node_types(self) -> Sequence[str]: ...

    def run(self, job: EngineJob, on_event: OnEvent, cancel: CancelToken) -> EngineResult:
        """Runs ``job`` to the end (blocking; called on a worker thread).

        Raises :class:`WorkflowRejected`, :class:`NodeRaised` or :class:`RunInterrupted`
        (after ``cancel`` is set). ``on_event`` is called on the same thread.
        """
        ...


def build_engine(
    name: str,
    device: str,
    work_dir: Path,
    comfyui: ComfyUISettings | None = None,
    memory: MemoryGuard | None = None,
) -> Engine:
    """The engine the executor registers with: "native", or "comfyui" with its settings.

    ``device`` is a resolved torch device ("cpu", "cuda:0"), see ``resources.resolve_device``.
    The comfyui engine is returned started (its ComfyUI answers); stop it with ``close()``.
    ``memory`` bounds a native run's allocations (the native engine's default otherwise).
    """
    if name == "comfyui" and comfyui is not None:
        from services.executor.comfyui import ComfyUIEngine

        engine = ComfyUIEngine(comfyui, device, work_dir / "comfyui")
        engine.start()
        return engine
    if name != "native":
        raise ValueError(f"unknown engine {name!r} (or comfyui without its settings)")
    # Imported here: the native nodes pull in torch and are only needed by a real executor.
    from services.executor.native import NativeEngine

    return NativeAdapter(NativeEngine(device, memory=memory), work_dir / "output")


class OutputFolder:
    """ComfyUI's output folder, kept between runs, with a folder of its own per cache scope.

    A resubmission answered from the node cache writes no files, yet its output nodes report
    the files of the run that filled the cache; keeping that run's files here lets the
    executor upload them again. After each run only the files it reported are kept. Each
    scope saves into its own folder, so file counters never show what another scope saved.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scope = SHARED_SCOPE
        self._content_types: dict[str, str] = {}
        shutil.rmtree(root, ignore_errors=True)

    def enter(self, scope: str) -> None:
        """Later writes and lookups are the ``scope``'s (set before each run)."""
        self.scope = scope

    def _folder(self, type_: str, subfolder: str) -> Path:
        scope_dir = hashlib.sha256(self.scope.encode()).hexdigest()[:32]
        base = self.root / scope_dir / ("_temp" if type_ == "temp" else "output")
        return base / safe_relative(subfolder) if subfolder else base

    def next_counter(self, type: str, subfolder: str, prefix: str) -> int:
        folder = self._folder(type, subfolder)
        return counter_after(prefix, os.listdir(folder)) if folder.is_dir() else 1

    def write(self, file: OutputFile) -> None:
        folder = self._folder(file.type, file.subfolder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / safe_relative(file.filename)
        path.write_bytes(file.data)
        self._content_types[str(path)] = file.content_type

    def produced(self, record: OutputRecord) -> ProducedFile:
        path = self._folder(record.type, record.subfolder) / safe_relative(record.filename)
        content_type = self._content_types.get(str(path)) or _guess_type(record.filename)
        return ProducedFile(
            record.node_id,
            record.filename,
            record.subfolder,
            record.kind,
            content_type,
            path.read_bytes(),
        )

    def keep_only(self, records: Sequence[OutputRecord]) -> None:
        """Deletes every file, of any scope, but ``records`` (of the current scope)."""
        keep = {str(self._folder(r.type, r.subfolder) / safe_relative(r.filename)) for r in records}
        if not self.root.is_dir():
            return
        for path in self.root.rglob("*"):
            if path.is_file() and str(path) not in keep:
                path.unlink()
                self._content_types.pop(str(path), None)


def _guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


class _Progress:
    """Turns the runner's events into :class:`NodeEvent`s with running node counts."""

    def __init__(self, workflow: Workflow, total: int, on_event: OnEvent) -> None:
        self.workflow = workflow
        self.total = total
        self.done = 0
        self.on_event = on_event

    def __call__(self, event: ExecutionEvent) -> None:
        if isinstance(event, NodesCached):
            for node_id in event.node_ids:
                self.done += 1
                self._send(NodeState.CACHED, node_id)
        elif isinstance(event, NodeStarted):
            self._send(NodeState.RUNNING, event.node_id)
        elif isinstance(event, RunnerProgress):
            value, top = int(event.value), int(event.max)
            self._send(NodeState.PROGRESS, event.node_id, value=value, max=top)
        elif (
            isinstance(event, NodeFinished) and not event.cached and event.status == NodeStatus.DONE
        ):
            self.done += 1
            self._send(NodeState.DONE, event.node_id, seconds=event.seconds)

    def _send(self, state: NodeState, node_id: str, **extra: Any) -> None:
        node = self.workflow.nodes.get(node_id)
        class_type = (node.class_type if node else None) or ""
        self.on_event(NodeEvent(state, node_id, class_type, self.done, self.total, **extra))


class NativeAdapter:
    """:class:`Engine` over the native torch engine."""

    name = "native"

    def __init__(self, engine: NativeEngine, output_root: Path) -> None:
        self._engine = engine
        self._outputs = OutputFolder(output_root)
        self._class_types: dict[str, str] = {}

    @property
    def device(self) -> str:
        return str(self._engine.device)

    def node_types(self) -> Sequence[str]:
        return sorted(self._engine.catalog)

    def run(self, job: EngineJob, on_event: OnEvent, cancel: CancelToken) -> EngineResult:
        inputs = DirectoryInputStore(job.input_dir)
        # Validated here as well as inside run(): the node count must be known before the
        # first event, and a refused workflow must fail before anything runs.
        validation = self._engine.validate(job.workflow_json, inputs)
        if not validation.ok or validation.workflow is None:
            raise _rejected(validation)
        total = len(execution_order(validation.workflow, validation.outputs))
        progress = _Progress(validation.workflow, total, on_event)
        self._outputs.enter(job.cache_scope)
        result = self._engine.run(
            job.workflow_json,
            inputs,
            self._outputs,
            on_progress=progress,
            cancel=cancel,
            validated=validation,
            weights=job.weights,
            cache_scope=job.cache_scope,
        )
        return self._result(result)

    def _result(self, result: RunResult) -> EngineResult:
        if result.status == RunStatus.CANCELLED:
            raise RunInterrupted("the run was cancelled")
        if result.status == RunStatus.INVALID:
            raise _rejected(result.validation)
        if result.status == RunStatus.FAILED:
            error = result.error
            assert error is not None
            raise NodeRaised(
                error.node_id,
                error.class_type,
                error.exception_type,
                error.exception_message,
                "".join(error.traceback),
            )
        records = [r for r in result.outputs if r.type == "output"]
        self._outputs.keep_only(result.outputs)
        files = tuple(self._outputs.produced(r) for r in records)
        return EngineResult(files, result.cached_nodes)


def _rejected(validation: ValidationResult | None) -> WorkflowRejected:
    if validation is None:
        return WorkflowRejected("the workflow is invalid")
    violations = [
        FieldViolation(v.field, v.description, v.reason) for v in validation.field_violations()
    ]
    message = f"the workflow is invalid: {describe(validation.issues)}"
    return WorkflowRejected(message, violations, validation.comfy_body())
