"""Shared plumbing for native node modules: collecting definitions and finding the device."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.runner import Fingerprint, NodeContext, NodeDefinition
from services.executor.weights import LoadedWeights

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class NativeResources:
    """What the native engine hands every node through ``ctx.resources``.

    ``weights`` are the run's models, loaded on ``device`` by the executor's weights cache
    before the run, by ``"<folder>/<name>"`` as the workflow names them.
    """

    device: torch.device
    weights: Mapping[str, LoadedWeights] = field(default_factory=dict)


class ModelNotLoaded(LookupError):
    """A node asked for a model the run was not given."""


def device_of(ctx: NodeContext) -> torch.device:
    """The device new tensors go to (CPU when the run has no native resources)."""
    resources = ctx.resources
    return resources.device if isinstance(resources, NativeResources) else torch.device("cpu")


def model_weights(ctx: NodeContext, folder: str, name: str) -> LoadedWeights:
    """The loaded weights of the model ``folder/name``: nodes take weights from here, never
    from files, so a model is loaded once per executor rather than once per node run.

    Return what is computed from the weights, not the weight tensors themselves: node outputs
    stay in the node cache, and tensors held there would outlive their eviction.
    """
    resources = ctx.resources
    weights = resources.weights if isinstance(resources, NativeResources) else {}
    found = weights.get(f"{folder}/{name}")
    if found is None:
        raise ModelNotLoaded(
            f"model {folder}/{name} was not loaded for this run: the job must name it "
            f"among its models (loaded: {sorted(weights) or 'none'})"
        )
    return found


def weights_fingerprint(folder: str, input_name: str) -> Fingerprint:
    """``IS_CHANGED`` of a node reading the model named by ``input_name``: the model's sha256,
    so a node output cached with one file is not reused for another file of the same name."""

    def fingerprint(ctx: NodeContext, inputs: Mapping[str, Any]) -> str:
        return model_weights(ctx, folder, str(inputs.get(input_name))).sha256

    return fingerprint


class NodeSet:
    """The node definitions of one module, collected with the :meth:`node` decorator.

    Each module owns its set; the engine's registry is assembled from them explicitly.
    """

    def __init__(self) -> None:
        self.definitions: list[NodeDefinition] = []

    def node(
        self,
        class_type: str,
        *,
        fingerprint: Fingerprint | None = None,
        input_is_list: bool = False,
    ) -> Callable[[F], F]:
        """Declare ``fn`` as the implementation of ``class_type`` (spec from the catalog)."""
        spec = NATIVE_CATALOG[class_type]

        def register(fn: F) -> F:
            self.definitions.append(
                NodeDefinition(spec, fn, fingerprint=fingerprint, input_is_list=input_is_list)
            )
            return fn

        return register
