"""Executing a validated workflow with a registry of node implementations (no torch here).

The :class:`Runner` runs only what the output nodes need, reuses outputs of unchanged nodes
from an :class:`OutputCache` (ComfyUI's semantics: a node is reused when its class, its literal
inputs and its upstream signatures are unchanged), reports progress as typed events, and
checks a :class:`CancelToken` between nodes (node implementations poll it inside long loops).

One cache serves many requesters, so every signature also holds the run's *cache scope* (the
executor passes one per tenant): a run never reuses what a run of another scope computed.
Only what :data:`SHARED_SCOPE` runs cached (an operator's warmup, which holds no tenant's data)
is reused by every scope, and then only for nodes that are not output nodes. An output node's
signature also holds the whole prompt it embeds in its files, so a file it hands back always
carries the prompt of the run that asks for it: only an identical resubmission reuses it.

Node implementations are plain callables ``fn(ctx, **inputs)`` returning a
:class:`NodeOutput` (or a tuple of output values), or :class:`Pending` to ask for lazy inputs.
Every output slot holds a list of values (ComfyUI's list semantics): a node fed lists is called
once per element unless it declares ``input_is_list``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from comfyfleet.workflow.graph import BadLink, Link, Workflow
from comfyfleet.workflow.io import InputStore, OutputSink
from comfyfleet.workflow.schedule import GraphError, Scheduler, execution_order
from comfyfleet.workflow.specs import NodeCatalog, NodeSpec

# --------------------------------------------------------------------------- cancellation


class ExecutionCancelled(Exception):
    """Raised inside a run when its :class:`CancelToken` was cancelled."""


class CancelToken:
    """A thread-safe flag a run checks between nodes and node code polls in long loops."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise ExecutionCancelled("execution cancelled")


# --------------------------------------------------------------------------- node contract


@dataclass(frozen=True, slots=True)
class NodeOutput:
    """What a node returns: one value per output slot, and what it shows (``ui``)."""

    values: tuple[Any, ...] = ()
    ui: Mapping[str, Sequence[Any]] | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A node's answer "evaluate these lazy inputs first, then call me again"."""

    inputs: tuple[str, ...]


@dataclass(slots=True)
class NodeContext:
    """What a node implementation may use besides its inputs."""

    node_id: str
    class_type: str
    cancel: CancelToken
    inputs: InputStore
    outputs: OutputSink
    prompt: Mapping[str, Any]
    extra_pnginfo: Mapping[str, Any] | None
    resources: Any
    report: Callable[[str, float, float], None]

    def progress(self, value: float, total: float) -> None:
        """Report progress of this node (``value`` of ``total``)."""
        self.report(self.node_id, value, total)

    def check_cancelled(self) -> None:
        """Raise :class:`ExecutionCancelled` when the run was cancelled (poll in long loops)."""
        self.cancel.raise_if_cancelled()


NodeFunction = Callable[..., Any]
Fingerprint = Callable[[NodeContext, Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class NodeDefinition:
    """A node type's spec and implementation.

    ``fingerprint(ctx, inputs)`` is ComfyUI's ``IS_CHANGED``: a value that changes when the
    node's result would change although its inputs did not (a loader's file content).
    ``input_is_list`` nodes receive whole lists instead of being called per element.
    ``not_idempotent`` nodes are never shared between nodes of the same signature.
    """

    spec: NodeSpec
    function: NodeFunction
    fingerprint: Fingerprint | None = None
    input_is_list: bool = False
    not_idempotent: bool = False

    @property
    def class_type(self) -> str:
        return self.spec.name


class NodeRegistry(Mapping[str, NodeDefinition]):
    """Node implementations by class name, passed to a runner (there is no global one)."""

    def __init__(self, definitions: Iterable[NodeDefinition]) -> None:
        self._defs: dict[str, NodeDefinition] = {}
        for definition in definitions:
            if definition.class_type in self._defs:
                raise ValueError(f"duplicate node type {definition.class_type}")
            self._defs[definition.class_type] = definition
        self.catalog = NodeCatalog(d.spec for d in self._defs.values())

    def __getitem__(self, name: str) -> NodeDefinition:
        return self._defs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._defs)

    def __len__(self) -> int:
        return len(self._defs)


# --------------------------------------------------------------------------- results


class NodeStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class NodeError:
    """A node that raised: ComfyUI's ``execution_error`` in typed form."""

    node_id: str
    class_type: str
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()

    def to_comfy(self) -> dict[str, Any]:
        """The data of ComfyUI's ``execution_error`` message (without prompt id and time)."""
        return {
            "node_id": self.node_id,
            "node_type": self.class_type,
            "executed": list(self.executed),
            "exception_message": f"{self.exception_message}\n",
            "exception_type": self.exception_type,
            "traceback": list(self.traceback),
        }


@dataclass(frozen=True, slots=True)
class NodeDone:
    """The node produced its outputs (``values[slot]`` is the list of that slot's values)."""

    values: tuple[list[Any], ...]
    ui: Mapping[str, list[Any]] | None

    status = NodeStatus.DONE


@dataclass(frozen=True, slots=True)
class NodeFailed:
    error: NodeError

    status = NodeStatus.FAILED


@dataclass(frozen=True, slots=True)
class NodePending:
    """The node needs these lazy inputs evaluated first."""

    inputs: tuple[str, ...]

    status = NodeStatus.PENDING


NodeResult = NodeDone | NodeFailed | NodePending


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class NodeReport:
    """How one needed node went: run (with its timing) or served from cache."""

    node_id: str
    class_type: str
    cached: bool
    started_s: float
    seconds: float


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One file an output node reported (``kind`` is the ui key: ``images``, ``latents``)."""

    node_id: str
    kind: str
    filename: str
    subfolder: str
    type: str
    cached: bool


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one execution."""

    status: RunStatus
    nodes: tuple[NodeReport, ...] = ()
    outputs: tuple[OutputRecord, ...] = ()
    ui: Mapping[str, Mapping[str, list[Any]]] = field(default_factory=dict)
    error: NodeError | None = None
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    validation: Any = None

    @property
    def cached_nodes(self) -> tuple[str, ...]:
        return tuple(n.node_id for n in self.nodes if n.cached)

    @property
    def executed_nodes(self) -> tuple[str, ...]:
        return tuple(n.node_id for n in self.nodes if not n.cached)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class NodesCached:
    """Sent once, before any node runs: the needed nodes served from cache."""

    node_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeStarted:
    node_id: str
    class_type: str


@dataclass(frozen=True, slots=True)
class NodeProgress:
    node_id: str
    value: float
    max: float


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """A node finished (or was served from cache, ``cached``); ``ui`` is what it shows."""

    node_id: str
    class_type: str
    status: NodeStatus
    cached: bool
    seconds: float
    ui: Mapping[str, list[Any]] | None = None


ExecutionEvent = NodesCached | NodeStarted | NodeProgress | NodeFinished
EventCallback = Callable[[ExecutionEvent], None]


# --------------------------------------------------------------------------- cache

# The cache scope of runs no tenant asked for (an operator's warmup, a local run): what they
# cache every scope may reuse, output nodes excepted.
SHARED_SCOPE = ""


@dataclass(frozen=True, slots=True)
class CachedOutput:
    values: tuple[list[Any], ...]
    ui: Mapping[str, list[Any]] | None


class OutputCache:
    """Node outputs of earlier executions, keyed by node signature.

    Like ComfyUI's default cache it keeps, after each execution, only the entries of that
    execution's nodes (``retain``), so memory does not grow with the number of workflows.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, CachedOutput] = {}
        self._lock = threading.Lock()

    def get(self, signature: bytes) -> CachedOutput | None:
        return self._entries.get(signature)

    def put(self, signature: bytes, entry: CachedOutput) -> None:
        with self._lock:
            self._entries[signature] = entry

    def retain(self, signatures: Iterable[bytes]) -> None:
        keep = set(signatures)
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if k in keep}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _literal_key(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def full_type_name(exc_type: type[BaseException]) -> str:
    """``RuntimeError`` for builtins, ``module.Class`` otherwise (as ComfyUI reports)."""
    module = exc_type.__module__
    if module == "builtins":
        return exc_type.__qualname__
    return f"{module}.{exc_type.__qualname__}"


# --------------------------------------------------------------------------- runner


@dataclass(slots=True)
class _Run:
    """The state of one execution."""

    workflow: Workflow
    definitions: dict[str, NodeDefinition]
    inputs: InputStore
    outputs: OutputSink
    extra_pnginfo: Mapping[str, Any] | None
    resources: Any
    on_event: EventCallback | None
    cancel: CancelToken
    started: float
    cache_scope: str = SHARED_SCOPE
    prompt: Mapping[str, Any] = field(default_factory=dict)
    # Each node's cache key in the run's scope; and in the shared scope, which a scoped run
    # may read (never write) for nodes other than outputs.
    signatures: dict[str, bytes] = field(default_factory=dict)
    shared_signatures: dict[str, bytes] = field(default_factory=dict)
    # The shared entries the run reused, kept in the cache with its own.
    reused_shared: list[bytes] = field(default_factory=list)
    values: dict[str, tuple[list[Any], ...]] = field(default_factory=dict)
    ui: dict[str, Mapping[str, list[Any]]] = field(default_factory=dict)
    reports: dict[str, NodeReport] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)

    def emit(self, event: ExecutionEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def report_progress(self, node_id: str, value: float, total: float) -> None:
        self.emit(NodeProgress(node_id, value, total))


class Runner:
    """Executes workflows with the node implementations of a registry."""

    def __init__(self, registry: NodeRegistry, cache: OutputCache | None = None) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()

    def _definition(self, workflow: Workflow, node_id: str) -> NodeDefinition:
        class_type = workflow[node_id].class_type
        definition = self.registry.get(class_type) if class_type is not None else None
        if definition is None:
            raise GraphError(node_id, f"node {node_id}: unknown node type {class_type!r}")
        return definition

    @staticmethod
    def _is_lazy(run: _Run) -> Callable[[str, str], bool]:
        def is_lazy(node_id: str, input_name: str) -> bool:
            spec = run.definitions[node_id].spec.input(input_name)
            return spec is not None and spec.lazy

        return is_lazy

    def output_nodes(self, workflow: Workflow) -> list[str]:
        """The workflow's output nodes (the default targets of a run)."""
        return [nid for nid in workflow if self._definition(workflow, nid).spec.output_node]

    def run(
        self,
        workflow: Workflow,
        *,
        inputs: InputStore,
        outputs: OutputSink,
        targets: Sequence[str] | None = None,
        on_event: EventCallback | None = None,
        cancel: CancelToken | None = None,
        extra_pnginfo: Mapping[str, Any] | None = None,
        resources: Any = None,
        use_cache: bool = True,
        fresh_outputs: bool = False,
        cache_scope: str = SHARED_SCOPE,
    ) -> RunResult:
        """Execute ``workflow`` (already validated) for ``targets`` (default: every output).

        ``use_cache=False`` neither reads nor updates the output cache. ``fresh_outputs``
        always runs output nodes (their inputs may still come from the cache), so every
        execution writes its own files; by default an output node of an identical earlier
        prompt is served from the cache and only its ui is replayed, as ComfyUI does.
        ``cache_scope`` keeps runs of different scopes (tenants) from reusing each other's
        node outputs.

        Graph problems (cycles, links to missing nodes, unknown types) raise
        :class:`GraphError`; a node that raises makes a ``FAILED`` result.
        """
        started = time.perf_counter()
        goal = list(targets) if targets is not None else self.output_nodes(workflow)
        order = execution_order(workflow, goal)
        run = _Run(
            workflow=workflow,
            definitions={nid: self._definition(workflow, nid) for nid in order},
            inputs=inputs,
            outputs=outputs,
            extra_pnginfo=extra_pnginfo,
            resources=resources,
            on_event=on_event,
            cancel=cancel if cancel is not None else CancelToken(),
            started=started,
            cache_scope=cache_scope,
        )
        try:
            fingerprints = self._fingerprints(run, order)
        except ExecutionCancelled:
            return self._finish(run, RunStatus.CANCELLED, None)
        except _FingerprintFailure as failure:
            return self._finish(run, RunStatus.FAILED, failure.error)
        run.prompt = _prompt_json(workflow, fingerprints)
        self._sign(run, order, fingerprints)
        cached = self._take_cached(run, order, fresh_outputs) if use_cache else []
        run.emit(NodesCached(tuple(cached)))
        for node_id in cached:
            self._report_cached(run, node_id)
        try:
            status, error = self._execute(run, goal, cached, use_cache)
        finally:
            # Even after a graph error: entries of earlier runs must not outlive the files
            # their output nodes name, which the next run's sink no longer keeps.
            if use_cache:
                self.cache.retain([*run.signatures.values(), *run.reused_shared])
        return self._finish(run, status, error)

    # -- preparation ---------------------------------------------------------------

    def _fingerprints(self, run: _Run, order: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for node_id in order:
            definition = run.definitions[node_id]
            if definition.fingerprint is None:
                continue
            ctx = self._context(run, node_id, definition)
            literals = {
                k: v
                for k, v in run.workflow[node_id].inputs.items()
                if not isinstance(v, Link | BadLink)
            }
            try:
                found[node_id] = definition.fingerprint(ctx, literals)
            except ExecutionCancelled:
                raise
            except Exception as exc:
                raise _FingerprintFailure(self._error(run, node_id, definition, exc)) from exc
        return found

    def _sign(self, run: _Run, order: Sequence[str], fingerprints: Mapping[str, Any]) -> None:
        """Compute each node's signature in the run's scope (and in the shared scope)."""
        embedded = _literal_key([run.prompt, run.extra_pnginfo]).encode()
        prompt_digest = hashlib.blake2b(embedded, digest_size=20).digest()
        run.signatures = self._signatures(run, order, fingerprints, run.cache_scope, prompt_digest)
        if run.cache_scope != SHARED_SCOPE:
            run.shared_signatures = self._signatures(
                run, order, fingerprints, SHARED_SCOPE, prompt_digest
            )

    @staticmethod
    def _signatures(
        run: _Run,
        order: Sequence[str],
        fingerprints: Mapping[str, Any],
        scope: str,
        prompt_digest: bytes,
    ) -> dict[str, bytes]:
        """A node's signature: the scope, its class, literals and upstream signatures; for an
        output node also the prompt its files embed."""
        signatures: dict[str, bytes] = {}
        for node_id in order:
            node = run.workflow[node_id]
            definition = run.definitions[node_id]
            digest = hashlib.blake2b(digest_size=20)
            digest.update(_literal_key(scope).encode() + b"\0")
            digest.update(definition.class_type.encode())
            digest.update(b"\0" + _literal_key(fingerprints.get(node_id)).encode())
            if definition.not_idempotent:
                digest.update(b"\0id:" + node_id.encode())
            if definition.spec.output_node:
                digest.update(b"\0prompt:" + prompt_digest)
            for name in sorted(node.inputs):
                value = node.inputs[name]
                digest.update(b"\0" + name.encode() + b"=")
                if isinstance(value, Link):
                    digest.update(signatures[value.node_id])
                    digest.update(b":%d" % value.output_index)
                else:
                    digest.update(_literal_key(value).encode())
            signatures[node_id] = digest.digest()
        return signatures

    def _take_cached(self, run: _Run, order: Sequence[str], fresh_outputs: bool) -> list[str]:
        cached: list[str] = []
        for node_id in order:
            output_node = run.definitions[node_id].spec.output_node
            if fresh_outputs and output_node:
                continue
            entry = self.cache.get(run.signatures[node_id])
            if entry is None and not output_node and node_id in run.shared_signatures:
                entry = self.cache.get(run.shared_signatures[node_id])
                if entry is not None:
                    run.reused_shared.append(run.shared_signatures[node_id])
            if entry is None:
                continue
            run.values[node_id] = entry.values
            if entry.ui is not None:
                run.ui[node_id] = entry.ui
            cached.append(node_id)
        return cached

    def _report_cached(self, run: _Run, node_id: str) -> None:
        class_type = run.workflow[node_id].class_type or ""
        run.reports[node_id] = NodeReport(node_id, class_type, True, 0.0, 0.0)
        ui = run.ui.get(node_id)
        if ui is not None:
            run.emit(NodeFinished(node_id, class_type, NodeStatus.DONE, True, 0.0, ui))

    # -- execution -----------------------------------------------------------------

    def _execute(
        self, run: _Run, goal: Sequence[str], cached: Sequence[str], use_cache: bool
    ) -> tuple[RunStatus, NodeError | None]:
        workflow = run.workflow
        scheduler = Scheduler(
            workflow,
            goal,
            is_output=lambda nid: run.definitions[nid].spec.output_node,
            is_lazy=self._is_lazy(run),
            done=cached,
        )
        while not scheduler.finished:
            if run.cancel.cancelled:
                return RunStatus.CANCELLED, None
            node_id = scheduler.next()
            if node_id is None:
                stuck = ", ".join(scheduler.pending())
                raise GraphError(scheduler.pending()[0], f"nodes cannot progress: {stuck}")
            try:
                result = self._run_node(run, node_id)
            except ExecutionCancelled:
                return RunStatus.CANCELLED, None
            if isinstance(result, NodeFailed):
                return RunStatus.FAILED, result.error
            if isinstance(result, NodePending):
                inputs = workflow[node_id].inputs
                upstream = [inputs.get(name) for name in result.inputs]
                links = [u.node_id for u in upstream if isinstance(u, Link)]
                if scheduler.wait_for(node_id, links):
                    continue
                result = self._run_node(run, node_id, force=True)
                if isinstance(result, NodeFailed):
                    return RunStatus.FAILED, result.error
                assert isinstance(result, NodeDone)
            run.values[node_id] = result.values
            if result.ui is not None:
                run.ui[node_id] = result.ui
            if use_cache:
                self.cache.put(run.signatures[node_id], CachedOutput(result.values, result.ui))
            scheduler.complete(node_id)
        return RunStatus.SUCCEEDED, None

    @staticmethod
    def _context(run: _Run, node_id: str, definition: NodeDefinition) -> NodeContext:
        return NodeContext(
            node_id=node_id,
            class_type=definition.class_type,
            cancel=run.cancel,
            inputs=run.inputs,
            outputs=run.outputs,
            prompt=run.prompt,
            extra_pnginfo=run.extra_pnginfo,
            resources=run.resources,
            report=run.report_progress,
        )

    def _gather(self, run: _Run, node_id: str, definition: NodeDefinition) -> dict[str, list[Any]]:
        """Input values of a node, each as a list (ComfyUI's list semantics)."""
        gathered: dict[str, list[Any]] = {}
        spec = definition.spec
        for name, value in run.workflow[node_id].inputs.items():
            ispec = spec.input(name)
            if ispec is None:
                continue
            if isinstance(value, Link):
                upstream = run.values.get(value.node_id)
                if upstream is None:
                    if ispec.lazy:
                        gathered[name] = [None]
                    continue
                gathered[name] = upstream[value.output_index]
            elif isinstance(value, BadLink):
                continue
            else:
                gathered[name] = [value]
        return gathered

    def _run_node(self, run: _Run, node_id: str, force: bool = False) -> NodeResult:
        definition = run.definitions[node_id]
        class_type = definition.class_type
        run.emit(NodeStarted(node_id, class_type))
        t0 = time.perf_counter()
        ctx = self._context(run, node_id, definition)
        try:
            gathered = self._gather(run, node_id, definition)
            result = self._call(ctx, definition, gathered)
        except ExecutionCancelled:
            raise
        except Exception as exc:
            error = self._error(run, node_id, definition, exc)
            seconds = time.perf_counter() - t0
            run.emit(NodeFinished(node_id, class_type, NodeStatus.FAILED, False, seconds))
            return NodeFailed(error)
        seconds = time.perf_counter() - t0
        if isinstance(result, NodePending):
            if force:
                message = f"asked again for inputs that are available: {list(result.inputs)}"
                error = NodeError(node_id, class_type, "RuntimeError", message)
                run.emit(NodeFinished(node_id, class_type, NodeStatus.FAILED, False, seconds))
                return NodeFailed(error)
            run.emit(NodeFinished(node_id, class_type, NodeStatus.PENDING, False, seconds))
            return result
        run.reports[node_id] = NodeReport(node_id, class_type, False, t0 - run.started, seconds)
        run.executed.append(node_id)
        run.emit(NodeFinished(node_id, class_type, NodeStatus.DONE, False, seconds, result.ui))
        return result

    def _call(
        self, ctx: NodeContext, definition: NodeDefinition, gathered: Mapping[str, list[Any]]
    ) -> NodeDone | NodePending:
        if definition.input_is_list:
            return self._merge(definition, [definition.function(ctx, **gathered)])
        lengths = [len(v) for v in gathered.values()]
        count = max(lengths) if lengths else 1
        if lengths and min(lengths) == 0:
            count = 0
        if count == 1:
            single = {k: v[0] for k, v in gathered.items()}
            return self._merge(definition, [definition.function(ctx, **single)])
        answers = []
        for index in range(count):
            ctx.check_cancelled()
            call = {k: v[min(index, len(v) - 1)] for k, v in gathered.items()}
            answers.append(definition.function(ctx, **call))
        return self._merge(definition, answers)

    def _merge(self, definition: NodeDefinition, answers: list[Any]) -> NodeDone | NodePending:
        """Combine the answers of one or more calls into per-slot lists."""
        outputs = definition.spec.outputs
        values: tuple[list[Any], ...] = tuple([] for _ in outputs)
        ui: dict[str, list[Any]] | None = None
        wanted: list[str] = []
        for answer in answers:
            if isinstance(answer, Pending):
                wanted.extend(i for i in answer.inputs if i not in wanted)
                continue
            out = answer if isinstance(answer, NodeOutput) else NodeOutput(tuple(answer))
            if len(out.values) != len(outputs):
                raise TypeError(
                    f"{definition.class_type} returned {len(out.values)} values "
                    f"for {len(outputs)} outputs"
                )
            for slot, value in enumerate(out.values):
                if outputs[slot].is_list:
                    values[slot].extend(value)
                else:
                    values[slot].append(value)
            if out.ui is not None:
                ui = ui if ui is not None else {}
                for key, items in out.ui.items():
                    ui.setdefault(key, []).extend(items)
        if wanted:
            return NodePending(tuple(wanted))
        return NodeDone(values, ui)

    def _error(
        self, run: _Run, node_id: str, definition: NodeDefinition, exc: BaseException
    ) -> NodeError:
        return NodeError(
            node_id=node_id,
            class_type=definition.class_type,
            exception_type=full_type_name(type(exc)),
            exception_message=str(exc),
            traceback=tuple(traceback.format_tb(exc.__traceback__)),
            executed=tuple(run.executed),
        )

    def _finish(self, run: _Run, status: RunStatus, error: NodeError | None) -> RunResult:
        reports = tuple(run.reports.values())
        cached = {r.node_id for r in reports if r.cached}
        records = tuple(
            OutputRecord(
                node_id,
                kind,
                item["filename"],
                item.get("subfolder", ""),
                item.get("type", "output"),
                node_id in cached,
            )
            for node_id, ui in run.ui.items()
            for kind, items in ui.items()
            for item in items
            if isinstance(item, Mapping) and "filename" in item
        )
        return RunResult(
            status=status,
            nodes=reports,
            outputs=records,
            ui=dict(run.ui),
            error=error,
            seconds=time.perf_counter() - run.started,
        )


class _FingerprintFailure(Exception):
    def __init__(self, error: NodeError) -> None:
        super().__init__(error.exception_message)
        self.error = error


def _prompt_json(workflow: Workflow, fingerprints: Mapping[str, Any]) -> dict[str, Any]:
    """The prompt as ComfyUI embeds it in outputs: converted inputs, plus ``is_changed``."""
    prompt: dict[str, Any] = {}
    for node_id, node in workflow.nodes.items():
        raw = workflow.raw.get(node_id)
        body: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
        body["inputs"] = {k: _jsonable(v) for k, v in node.inputs.items()}
        if node_id in fingerprints:
            body["is_changed"] = [fingerprints[node_id]]
        prompt[node_id] = body
    return prompt


def _jsonable(value: Any) -> Any:
    if isinstance(value, Link):
        return value.to_json()
    if isinstance(value, BadLink):
        return value.raw
    return value
