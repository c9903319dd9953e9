"""Validate-then-run in one call, for any registry of node implementations (no torch here)."""

from __future__ import annotations

import dataclasses
import mimetypes
import time
from collections.abc import Mapping, Sequence
from typing import Any

from comfyfleet.workflow.graph import Workflow
from comfyfleet.workflow.io import InputStore, OutputSink
from comfyfleet.workflow.runner import (
    SHARED_SCOPE,
    CancelToken,
    EventCallback,
    NodeError,
    NodeRegistry,
    OutputCache,
    Runner,
    RunResult,
    RunStatus,
)
from comfyfleet.workflow.schedule import DependencyCycleError, GraphError
from comfyfleet.workflow.specs import InputSpec, NodeSpec
from comfyfleet.workflow.validate import ValidationResult, validate_workflow


def store_file_check(inputs: InputStore) -> Any:
    """A ``file_exists`` hook for :func:`validate_workflow` backed by an input store."""

    def file_exists(spec: NodeSpec, ispec: InputSpec, name: str) -> bool:
        return inputs.exists(name)

    return file_exists


class WorkflowEngine:
    """Validates workflows against a registry's catalog and runs them with its nodes.

    The output cache lives as long as the engine: resubmitting a workflow reuses what did
    not change.
    """

    def __init__(self, registry: NodeRegistry, cache: OutputCache | None = None) -> None:
        self.registry = registry
        self.catalog = registry.catalog
        self.runner = Runner(registry, cache)

    @property
    def cache(self) -> OutputCache:
        return self.runner.cache

    def validate(
        self,
        workflow: str | bytes | Mapping[str, Any] | Workflow,
        inputs: InputStore | None = None,
        *,
        outputs: Sequence[str] | None = None,
    ) -> ValidationResult:
        """Validate like ComfyUI; loader file names are checked when ``inputs`` is given."""
        file_exists = store_file_check(inputs) if inputs is not None else None
        return validate_workflow(workflow, self.catalog, file_exists=file_exists, outputs=outputs)

    def object_info(self, inputs: InputStore | None = None) -> dict[str, Any]:
        """``GET /object_info``; loader choices list the input store's files when given."""
        if inputs is None:
            return self.catalog.object_info()
        names = list(inputs.names())

        def listing(spec: NodeSpec, ispec: InputSpec) -> list[str]:
            if spec.name == "LoadLatent":
                return [n for n in names if n.endswith(".latent")]
            return [n for n in names if (mimetypes.guess_type(n)[0] or "").startswith("image/")]

        return self.catalog.object_info(listing)

    def run(
        self,
        workflow: str | bytes | Mapping[str, Any] | Workflow,
        inputs: InputStore,
        outputs: OutputSink,
        *,
        on_event: EventCallback | None = None,
        cancel: CancelToken | None = None,
        extra_pnginfo: Mapping[str, Any] | None = None,
        targets: Sequence[str] | None = None,
        resources: Any = None,
        use_cache: bool = True,
        fresh_outputs: bool = False,
        validated: ValidationResult | None = None,
        cache_scope: str = SHARED_SCOPE,
    ) -> RunResult:
        """Validate ``workflow`` and, when it is acceptable, run its valid outputs.

        An invalid workflow gives ``RunStatus.INVALID`` with the ``validation`` result set.
        ``validated`` passes the result of an earlier :meth:`validate` of the same workflow
        (and inputs) to skip validating it again. ``cache_scope``: see :meth:`Runner.run`.
        """
        started = time.perf_counter()
        if validated is not None:
            validation = validated
        else:
            validation = self.validate(workflow, inputs, outputs=targets)
        if not validation.ok or validation.workflow is None:
            return RunResult(
                RunStatus.INVALID, validation=validation, seconds=time.perf_counter() - started
            )
        try:
            result = self.runner.run(
                validation.workflow,
                inputs=inputs,
                outputs=outputs,
                targets=validation.outputs,
                on_event=on_event,
                cancel=cancel,
                extra_pnginfo=extra_pnginfo,
                resources=resources,
                use_cache=use_cache,
                fresh_outputs=fresh_outputs,
                cache_scope=cache_scope,
            )
        except GraphError as exc:
            return _graph_failure(validation, exc, started)
        return dataclasses.replace(result, validation=validation)


def _graph_failure(validation: ValidationResult, exc: GraphError, started: float) -> RunResult:
    workflow = validation.workflow
    node = workflow.nodes.get(exc.node_id) if workflow is not None else None
    kind = "DependencyCycleError" if isinstance(exc, DependencyCycleError) else "GraphError"
    error = NodeError(exc.node_id, (node.class_type if node else None) or "", kind, str(exc))
    return RunResult(
        RunStatus.FAILED,
        error=error,
        validation=validation,
        seconds=time.perf_counter() - started,
    )
