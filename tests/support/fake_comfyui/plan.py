"""How ComfyUI 0.3.64 orders and caches a prompt's nodes, and names the files it saves.

Scheduling only: the fake never computes a node. The order follows ComfyUI's
``ExecutionList`` (nodes added depth-first from each output, a ready output first, then a
node that unblocks an output within two steps, else the first ready node), which is what
makes the captured runtime error run node 2 before node 1.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


class _ExecutionList:
    def __init__(self, prompt: dict[str, Any], cached: Collection[str], outputs: Collection[str]):
        self.prompt = prompt
        self.cached = cached
        self.outputs = outputs
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, set[str]] = {}

    def add_node(self, root: str) -> None:
        stack, links = [root], []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = True
            self.block_count[node_id] = 0
            self.blocking[node_id] = set()
            for value in self.prompt[node_id].get("inputs", {}).values():
                if is_link(value):
                    if value[0] not in self.cached:
                        stack.append(value[0])
                    links.append((value[0], node_id))
        for source, target in links:
            if source not in self.cached:
                self.add_node(source)
                if target not in self.blocking[source]:
                    self.blocking[source].add(target)
                    self.block_count[target] += 1

    def pick(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        for n in ready:
            if n in self.outputs:
                return n
        for n in ready:
            if any(b in self.outputs for b in self.blocking[n]):
                return n
        for n in ready:
            if any(c in self.outputs for b in self.blocking[n] for c in self.blocking[b]):
                return n
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


def execution_order(
    prompt: dict[str, Any],
    outputs: list[str],
    cached: Collection[str],
    output_nodes: Collection[str],
) -> list[str]:
    """The nodes ComfyUI visits, in order: cached output nodes included, other cached nodes not."""
    plan = _ExecutionList(prompt, cached, output_nodes)
    for node_id in outputs:
        plan.add_node(node_id)
    order = []
    while plan.pending:
        node_id = plan.pick()
        order.append(node_id)
        plan.complete(node_id)
    return order


def signatures(prompt: dict[str, Any], input_file: Callable[[str], Path]) -> dict[str, str]:
    """A cache key per node: its class, literal inputs and the keys of what it links to.

    LoadImage's key includes its file's bytes, as ComfyUI's ``IS_CHANGED`` hash does.
    """
    keys: dict[str, str] = {}

    def key(node_id: str, path: tuple[str, ...] = ()) -> str:
        if node_id not in keys:
            node = prompt[node_id]
            parts: dict[str, Any] = {"class": node.get("class_type")}
            for name, value in sorted(node.get("inputs", {}).items()):
                linked = is_link(value) and value[0] in prompt and value[0] not in path
                parts[name] = [key(value[0], (*path, node_id)), value[1]] if linked else value
            if node.get("class_type") in {"LoadImage", "LoadImageMask", "LoadLatent"}:
                parts["file"] = _file_hash(
                    input_file(
                        str(
                            node.get("inputs", {}).get("image")
                            or node.get("inputs", {}).get("latent")
                        )
                    )
                )
            keys[node_id] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return keys[node_id]

    for node_id in prompt:
        key(node_id)
    return keys


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def save_path(output_dir: Path, prefix: str) -> tuple[Path, str, str, int]:
    """ComfyUI's ``get_save_image_path``: (folder, subfolder, base name, next counter)."""
    subfolder, _, base = prefix.replace("\\", "/").rpartition("/")
    folder = output_dir / subfolder
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)_")
    counters = [
        int(m.group(1))
        for p in (folder.iterdir() if folder.is_dir() else ())
        if (m := pattern.match(p.name))
    ]
    return folder, subfolder, base, max(counters, default=0) + 1
