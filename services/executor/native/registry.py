"""The registry of every native node implementation."""

from __future__ import annotations

from functools import cache

from comfyfleet.workflow.runner import NodeDefinition, NodeRegistry
from services.executor.native.nodes import files, image, latent, mask, text, transform
from services.executor.native.nodes.base import NodeSet

NODE_SETS: tuple[NodeSet, ...] = (
    image.nodes,
    transform.nodes,
    mask.nodes,
    latent.nodes,
    files.nodes,
    text.nodes,
)


def native_definitions() -> list[NodeDefinition]:
    """Every native node definition, module by module."""
    return [d for node_set in NODE_SETS for d in node_set.definitions]


@cache
def native_registry() -> NodeRegistry:
    """The registry of all native nodes (built once; it is immutable)."""
    return NodeRegistry(native_definitions())
