"""Shared plumbing for native node modules: collecting definitions and finding the device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.runner import Fingerprint, NodeContext, NodeDefinition

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class NativeResources:
    """What the native engine hands every node through ``ctx.resources``."""

    device: torch.device


def device_of(ctx: NodeContext) -> torch.device:
    """The device new tensors go to (CPU when the run has no native resources)."""
    resources = ctx.resources
    return resources.device if isinstance(resources, NativeResources) else torch.device("cpu")


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
