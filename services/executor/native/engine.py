"""The native engine: ComfyUI API-format workflows run by our own torch nodes."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from comfyfleet.workflow.engine import WorkflowEngine
from comfyfleet.workflow.graph import Workflow
from comfyfleet.workflow.io import InputStore, OutputSink
from comfyfleet.workflow.runner import (
    SHARED_SCOPE,
    CancelToken,
    EventCallback,
    NodeRegistry,
    OutputCache,
    RunResult,
)
from comfyfleet.workflow.specs import NodeCatalog
from comfyfleet.workflow.validate import ValidationResult
from services.executor.native.memory import MemoryGuard, guarding
from services.executor.native.nodes.base import NativeResources
from services.executor.native.registry import native_registry
from services.executor.resources import available_memory_bytes
from services.executor.weights import LoadedWeights


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/``None``: CUDA when available, else CPU; otherwise the device named."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class NativeEngine:
    """Validates and runs workflows on one device, keeping an output cache between runs.

    One engine runs one workflow at a time (the executor's model); it is not re-entrant.
    ``memory`` bounds what a run may allocate (``memory.MemoryGuard``); by default only the
    memory free on the device at each allocation.
    """

    def __init__(
        self,
        device: str | torch.device | None = "auto",
        *,
        registry: NodeRegistry | None = None,
        cache: OutputCache | None = None,
        memory: MemoryGuard | None = None,
    ) -> None:
        self.device = pick_device(device)
        self._engine = WorkflowEngine(registry or native_registry(), cache)
        self._resources = NativeResources(self.device)
        self.memory = memory or MemoryGuard(
            free_bytes=functools.partial(available_memory_bytes, str(self.device))
        )

    @property
    def catalog(self) -> NodeCatalog:
        return self._engine.catalog

    @property
    def cache(self) -> OutputCache:
        return self._engine.cache

    def clear_cache(self) -> None:
        self._engine.cache.clear()

    def validate(
        self,
        workflow: str | bytes | Mapping[str, Any] | Workflow,
        inputs: InputStore | None = None,
    ) -> ValidationResult:
        return self._engine.validate(workflow, inputs)

    def object_info(self, inputs: InputStore | None = None) -> dict[str, Any]:
        return self._engine.object_info(inputs)

    def run(
        self,
        workflow: str | bytes | Mapping[str, Any] | Workflow,
        inputs: InputStore,
        outputs: OutputSink,
        *,
        on_progress: EventCallback | None = None,
        cancel: CancelToken | None = None,
        extra_pnginfo: Mapping[str, Any] | None = None,
        targets: Sequence[str] | None = None,
        use_cache: bool = True,
        fresh_outputs: bool = False,
        validated: ValidationResult | None = None,
        weights: Mapping[str, LoadedWeights] | None = None,
        cache_scope: str = SHARED_SCOPE,
    ) -> RunResult:
        """Validate and run ``workflow``; see :class:`comfyfleet.workflow.runner.RunResult`.

        ``on_progress`` receives every execution event (cached nodes, node start, progress,
        finish). ``cancel`` stops the run between nodes and inside long node loops.
        ``fresh_outputs`` always runs output nodes, so every run writes its own files;
        ``validated`` reuses an earlier :meth:`validate` result of the same workflow.
        ``weights`` are the run's loaded models by ``"<folder>/<name>"``, which nodes reach
        through ``ctx.resources`` (``nodes.base.model_weights``). Runs of different
        ``cache_scope``s (tenants) never reuse each other's node outputs.
        """
        resources = NativeResources(self.device, weights) if weights else self._resources
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        with torch.inference_mode(), guarding(self.memory):
            result = self._engine.run(
                workflow,
                inputs,
                outputs,
                on_event=on_progress,
                cancel=cancel,
                extra_pnginfo=extra_pnginfo,
                targets=targets,
                resources=resources,
                use_cache=use_cache,
                fresh_outputs=fresh_outputs,
                validated=validated,
                cache_scope=cache_scope,
            )
        if on_cuda:
            peak = torch.cuda.max_memory_allocated(self.device)
            result = dataclasses.replace(result, peak_memory_bytes=peak)
        return result
