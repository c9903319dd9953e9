"""What the fake ComfyUI knows, all read from the captures of a real ComfyUI 0.3.64."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.paths import comfyui_ref


@functools.cache
def object_info() -> dict[str, Any]:
    return json.loads((comfyui_ref() / "object_info.json").read_text())


def output_classes() -> frozenset[str]:
    return frozenset(name for name, info in object_info().items() if info.get("output_node"))


@functools.cache
def traces() -> dict[str, Any]:
    return json.loads((comfyui_ref() / "ws_trace.json").read_text())


@functools.cache
def _invalid_responses() -> dict[str, Any]:
    return json.loads((comfyui_ref() / "invalid_responses.json").read_text())


def workflow(name: str) -> dict[str, Any]:
    return json.loads((comfyui_ref() / "workflows" / f"{name}.json").read_text())


@dataclass(frozen=True)
class CannedAnswer:
    """What ComfyUI answered to ``POST /prompt`` for one of the captured bad workflows."""

    status: int
    body: Any


def canned_answer(prompt: Any) -> CannedAnswer | None:
    """The captured answer when ``prompt`` is one of the captured bad (or partial) workflows."""
    for name, answer in _invalid_responses().items():
        path = comfyui_ref() / "workflows" / name
        if name.endswith(".json") and path.is_file() and json.loads(path.read_text()) == prompt:
            return CannedAnswer(answer["status"], answer["body"])
    return None


def no_prompt_answer() -> CannedAnswer:
    answer = _invalid_responses()["<no 'prompt' key>"]
    return CannedAnswer(answer["status"], answer["body"])


def malformed_json_answer() -> CannedAnswer:
    answer = _invalid_responses()["<malformed JSON body>"]
    return CannedAnswer(answer["status"], answer["body"])


def captured_error(prompt: Any) -> dict[str, Any] | None:
    """The ``execution_error`` ComfyUI sent for this exact prompt, when it was captured."""
    for trace in traces().values():
        if isinstance(trace, dict) and trace.get("prompt") == prompt:
            for item in trace["messages"]:
                if item["msg"]["type"] == "execution_error":
                    return dict(item["msg"]["data"])
    return None


@dataclass(frozen=True)
class CannedFile:
    """One file an output node writes: its kind ("images", "latents") and stand-in bytes."""

    kind: str
    suffix: str
    source: Path


def _reference_runs() -> dict[str, Path]:
    return {p.name: p for p in (comfyui_ref() / "reference").iterdir() if p.is_dir()}


def _stand_in(kind: str) -> CannedFile:
    # Graphs with no captured pixels get a captured file of the same kind as content; the
    # fake never computes an image.
    if kind == "latents":
        return CannedFile(
            kind, ".latent", comfyui_ref() / "reference/r08_latent/node4_latents_0.latent"
        )
    return CannedFile(kind, ".png", comfyui_ref() / "reference/r01_invert/node3_images_0.png")


def canned_files(prompt: dict[str, Any], node_id: str) -> list[CannedFile]:
    """The files output node ``node_id`` of ``prompt`` writes.

    A reference workflow (r01-r10) writes what ComfyUI wrote for it. A graph captured in
    the websocket traces writes as many files as it did there. Any other saver writes one.
    """
    for name, folder in _reference_runs().items():
        path = comfyui_ref() / "workflows" / f"{name}.json"
        if path.is_file() and json.loads(path.read_text()) == prompt:
            result = json.loads((folder / "result.json").read_text())
            return [
                CannedFile(f["kind"], Path(f["file"]).suffix, folder / f["file"])
                for f in result["files"]
                if f["node"] == node_id
            ]
    captured = _captured_outputs(prompt, node_id)
    if captured is not None:
        return captured
    class_type = prompt[node_id].get("class_type")
    return [_stand_in("latents" if class_type == "SaveLatent" else "images")]


def _captured_outputs(prompt: dict[str, Any], node_id: str) -> list[CannedFile] | None:
    for trace in traces().values():
        if isinstance(trace, dict) and "history" in trace and same_graph(trace["prompt"], prompt):
            entry = next(iter(trace["history"].values()))
            outputs = entry["outputs"].get(node_id, {})
            return [_stand_in(kind) for kind, items in outputs.items() for _ in items]
    return None


def same_graph(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same nodes, classes and links; literal values may differ."""

    def shape(p: dict[str, Any]) -> dict[str, Any]:
        return {
            nid: (
                node.get("class_type"),
                {k: v for k, v in node.get("inputs", {}).items() if isinstance(v, list)},
            )
            for nid, node in p.items()
            if isinstance(node, dict)
        }

    return shape(a) == shape(b)
