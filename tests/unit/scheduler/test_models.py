"""The models a workflow needs, from the models service's answer."""

from __future__ import annotations

from comfyfleet.models.v1 import models_pb2
from services.scheduler.models import ModelNeed, needs_of


def resolved(node: str, name: str, folder: str, sha: str) -> models_pb2.ResolvedModel:
    return models_pb2.ResolvedModel(
        node_id=node,
        folder=folder,
        model=models_pb2.Model(name=name, sha256=sha, size_bytes=len(sha)),
    )


def test_nodes_naming_one_file_need_it_once_and_needs_are_sorted() -> None:
    needs = needs_of(
        [
            resolved("4", "b.safetensors", "loras", "bb"),
            resolved("1", "a.safetensors", "checkpoints", "aa"),
            resolved("7", "a.safetensors", "checkpoints", "aa"),
        ]
    )
    assert needs == [
        ModelNeed("a.safetensors", "checkpoints", "aa", 2),
        ModelNeed("b.safetensors", "loras", "bb", 2),
    ]
    assert [ModelNeed.from_json(n.to_json()) for n in needs] == needs
