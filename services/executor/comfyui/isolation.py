"""Keeping tenants apart inside a ComfyUI that serves them all (issue 11).

ComfyUI caches each node's outputs under a key made of its class, its ``IS_CHANGED``, its
literal inputs sorted by name and its ancestors' keys; hidden inputs (the prompt, the
workflow) are not part of it. A tenant that submits a graph another tenant ran before would
get that tenant's results back, and from an output node that tenant's file, whose PNG embeds
that tenant's whole prompt. Its output folder, shared, also numbers every file after the
files of earlier runs.

What this module does, before a prompt goes to ComfyUI and after its files come back:

- **A salt input on every node.** :data:`SALT_INPUT`, an input no node declares, is set on
  every node (over any value a client sent): an HMAC, under a secret of this engine, of the
  job's cache scope (its tenant). ComfyUI 0.3.64 accepts an undeclared input, validates
  nothing about it and passes a literal one to no node function (tested against the real
  ComfyUI), yet keys its cache on it: each scope gets keys of its own, while a tenant's
  resubmission still finds its intermediate results.
- **Output nodes keyed on the prompt.** Nodes whose results embed the prompt (output nodes,
  and nodes taking the hidden ``PROMPT``/``EXTRA_PNGINFO``) are salted with a digest of the
  exact submitted workflow and of its input files too, so a file always embeds the prompt of
  the run that receives it; only an identical resubmission reuses it.
- **Weight loaders stay shared.** A node in a ``loaders`` category that returns only model
  weights (``MODEL``, ``CLIP``, ``VAE`` ...) and whose linked inputs all come from such
  loaders holds no tenant data: its salt names only the files of the models it names (the
  executor's model cache names files by sha256), so every tenant reuses a checkpoint loaded
  once, and a tenant's private model of the same name as another's is loaded apart.
- **Files in a folder per scope.** Every literal ``filename_prefix`` that stays inside the
  output folder is moved into ``comfyfleet-<scope key>/``, so a tenant's file counters count
  only its own files; the reported subfolder is given back without that folder. Inputs of a
  ComfyUI reached by URL are uploaded under a folder keyed on the scope and the content, so
  no tenant can name (or probe for) another's upload.
- **The prompt restored.** ComfyUI embeds the prompt it ran (salts, upload folders, moved
  prefixes). Each fetched PNG (``tEXt``/APNG ``comf`` chunk) and latent (safetensors
  metadata) gets the submitted inputs back in each node of that prompt, everything else
  (ComfyUI's ``is_changed``) kept as it was, so the file is the one ComfyUI would have
  written for the submitted workflow. Other formats (WEBP, video, audio, 3D) keep the prompt
  as run: it names the tenant's own salt and upload folders, never another tenant's data.

Why not the alternatives: ``POST /free`` between tenants empties the whole cache, weights
included, so every switch of tenant reloads every model (seconds to minutes on a GPU) and a
shared ComfyUI reached by URL cannot be freed for one caller without racing the others; a
ComfyUI process per tenant multiplies GPU memory by the number of tenants. The salt keeps
ComfyUI's cache working within a tenant and for model weights across tenants, and changes
nothing in ComfyUI. The secret is per engine by default (a restart forgets the cache
anyway); engines that share a ComfyUI by URL may pass one secret so a tenant's cache spans
them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import posixpath
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The undeclared input holding a node's salt; the name only has to be one no node declares.
SALT_INPUT = "comfyfleet_cache_scope"
# Folders the engine makes in ComfyUI's input and output folders start with this.
FOLDER_PREFIX = "comfyfleet-"
# What a weight loader may return: model weights, nothing computed from a tenant's input.
WEIGHT_TYPES = frozenset(
    {
        "MODEL",
        "CLIP",
        "VAE",
        "CONTROL_NET",
        "STYLE_MODEL",
        "CLIP_VISION",
        "GLIGEN",
        "UPSCALE_MODEL",
        "MODEL_PATCH",
        "AUDIO_ENCODER",
    }
)
PROMPT_HIDDEN = frozenset({"PROMPT", "EXTRA_PNGINFO"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks holding "keyword\0text": PNG text, and the one ComfyUI's SaveAnimatedPNG writes.
_PNG_TEXT_CHUNKS = (b"tEXt", b"comf")


@dataclass(frozen=True)
class NodeKinds:
    """What ComfyUI's ``/object_info`` says about the node types salting cares about."""

    # Types whose results embed the prompt: output nodes and takers of PROMPT/EXTRA_PNGINFO.
    embeds_prompt: frozenset[str] = frozenset()
    weight_loaders: frozenset[str] = frozenset()

    @classmethod
    def from_object_info(cls, info: Mapping[str, Any]) -> NodeKinds:
        embeds, loaders = set(), set()
        for name, node in info.items():
            if not isinstance(node, Mapping):
                continue
            if node.get("output_node") or _takes_prompt(node):
                embeds.add(name)
            elif _loads_weights(node):
                loaders.add(name)
        return cls(frozenset(embeds), frozenset(loaders))


def _takes_prompt(node: Mapping[str, Any]) -> bool:
    inputs = node.get("input")
    hidden = inputs.get("hidden") if isinstance(inputs, Mapping) else None
    return isinstance(hidden, Mapping) and any(
        str(kind) in PROMPT_HIDDEN for kind in hidden.values()
    )


def _loads_weights(node: Mapping[str, Any]) -> bool:
    category = str(node.get("category") or "")
    outputs = node.get("output")
    return (
        "loaders" in category.split("/")
        and isinstance(outputs, list)
        and bool(outputs)
        and all(isinstance(t, str) and t in WEIGHT_TYPES for t in outputs)
    )


@dataclass(frozen=True)
class Isolated:
    """One run's prompt as sent to ComfyUI, and how to give its files back as submitted."""

    prompt: dict[str, Any]
    submitted: Mapping[str, Any]
    # The folder of ComfyUI's output folder the run's files are saved in.
    output_folder: str

    def client_subfolder(self, subfolder: str) -> str:
        """The subfolder ComfyUI reported, as it would be without the scope's folder."""
        if subfolder == self.output_folder:
            return ""
        return subfolder.removeprefix(self.output_folder + "/")

    def restored(self, filename: str, data: bytes) -> bytes:
        """``data`` with the prompt it embeds given back its submitted inputs."""
        if data.startswith(_PNG_SIGNATURE):
            return _png_restored(data, self._restore_text)
        if filename.endswith(".latent"):
            return _safetensors_restored(data, self._restore_text)
        return data

    def _restore_text(self, text: str) -> str | None:
        """The embedded prompt's text with the submitted inputs; None when nothing changes."""
        try:
            embedded = json.loads(text)
        except ValueError:
            return None
        if not isinstance(embedded, dict):
            return None
        restored = {
            node_id: _node_restored(node, self.submitted.get(node_id))
            for node_id, node in embedded.items()
        }
        return None if restored == embedded else json.dumps(restored)


def _node_restored(node: Any, submitted: Any) -> Any:
    if not isinstance(node, dict) or not isinstance(submitted, Mapping):
        return node
    if "inputs" not in submitted:
        return {k: v for k, v in node.items() if k != "inputs"}
    return {k: (submitted["inputs"] if k == "inputs" else v) for k, v in node.items()}


class Isolation:
    """Salts prompts and names folders for one engine, under its ``secret``."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, *parts: str) -> str:
        message = json.dumps(parts).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def scope_folder(self, scope: str) -> str:
        """The folder of the scope's output files (in ComfyUI's output folder)."""
        return FOLDER_PREFIX + self._mac("output folder", scope)[:32]

    def upload_name(self, scope: str, data: bytes, name: str) -> str:
        """Where an input goes in a shared ComfyUI's input folder: a folder of the scope and
        the content, so that naming it takes being the tenant and knowing the content."""
        digest = hashlib.sha256(data).hexdigest()
        return f"{FOLDER_PREFIX}{self._mac('upload', scope, digest)[:32]}/{name}"

    def isolate(
        self,
        prompt: Mapping[str, Any],
        submitted: Mapping[str, Any],
        scope: str,
        kinds: NodeKinds,
        models: Mapping[str, Path],
        inputs: Iterable[tuple[str, bytes]],
    ) -> Isolated:
        """``prompt`` (the submitted workflow with inputs renamed as uploaded) salted.

        ``models`` are the job's model files by "<folder>/<name>"; ``inputs`` its input
        files (name, bytes), part of what an output node's file embeds.
        """
        folder = self.scope_folder(scope)
        scope_salt = self._mac("scope", scope)
        prompt_salt = self._mac("scope", scope, "prompt", _workflow_digest(submitted, inputs))
        shared = _shared_loaders(prompt, kinds.weight_loaders)
        sent: dict[str, Any] = {}
        for node_id, node in prompt.items():
            if not isinstance(node, Mapping):
                sent[node_id] = node
                continue
            inputs_of = node.get("inputs")
            literals = dict(inputs_of) if isinstance(inputs_of, Mapping) else {}
            if node_id in shared:
                salt = self._mac("weights", *_named_model_files(literals, models))
            elif node.get("class_type") in kinds.embeds_prompt:
                salt = prompt_salt
            else:
                salt = scope_salt
            _move_prefix(literals, folder)
            literals[SALT_INPUT] = salt
            sent[node_id] = {**node, "inputs": literals}
        return Isolated(sent, submitted, folder)


def _workflow_digest(submitted: Mapping[str, Any], inputs: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256(json.dumps(submitted, sort_keys=True).encode())
    for name, data in sorted(inputs):
        digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _links(node: Any) -> list[str]:
    inputs = node.get("inputs") if isinstance(node, Mapping) else None
    if not isinstance(inputs, Mapping):
        return []
    return [
        str(v[0])
        for v in inputs.values()
        if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int)
    ]


def _shared_loaders(prompt: Mapping[str, Any], loaders: frozenset[str]) -> set[str]:
    """The weight loaders whose every linked input comes from such a loader."""
    known: dict[str, bool] = {}

    def shared(node_id: str) -> bool:
        if node_id not in known:
            node = prompt.get(node_id)
            known[node_id] = False  # a cycle is no loader chain
            is_loader = isinstance(node, Mapping) and node.get("class_type") in loaders
            known[node_id] = is_loader and all(shared(up) for up in _links(node))
        return known[node_id]

    return {node_id for node_id in prompt if shared(node_id)}


def _named_model_files(literals: Mapping[str, Any], models: Mapping[str, Path]) -> list[str]:
    """The files (content-named in the model cache) of the job's models a node names."""
    names = {v for v in literals.values() if isinstance(v, str)}
    return sorted(
        str(path.resolve()) for key, path in models.items() if key.partition("/")[2] in names
    )


def _move_prefix(literals: dict[str, Any], folder: str) -> None:
    """Saves go into ``folder``; a prefix that leaves the output folder is left for ComfyUI
    to refuse as it always does."""
    prefix = literals.get("filename_prefix")
    if not isinstance(prefix, str):
        return
    normal = posixpath.normpath(prefix) if prefix else ""
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        return
    literals["filename_prefix"] = f"{folder}/{prefix}"


# ------------------------------------------------------------------ file metadata


def _png_restored(data: bytes, restore: Any) -> bytes:
    """The PNG with its ``prompt`` text chunks' text restored (chunks rebuilt, CRCs too)."""
    out, pos, changed = [data[:8]], 8, False
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        chunk = data[pos:end]
        if kind in _PNG_TEXT_CHUNKS:
            keyword, _, text = data[pos + 8 : end - 4].partition(b"\0")
            new = restore(text.decode("latin-1")) if keyword == b"prompt" else None
            if new is not None:
                body = b"prompt\0" + new.encode("latin-1")
                crc = zlib.crc32(kind + body) & 0xFFFFFFFF
                chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
                changed = True
        out.append(chunk)
        pos = end
    out.append(data[pos:])
    return b"".join(out) if changed else data


def _safetensors_restored(data: bytes, restore: Any) -> bytes:
    """The safetensors file with its ``prompt`` metadata restored, tensors untouched."""
    if len(data) < 8:
        return data
    (size,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + size]
    try:
        meta = json.loads(header).get("__metadata__") or {}
    except (ValueError, AttributeError):
        return data
    text = meta.get("prompt") if isinstance(meta, Mapping) else None
    new = restore(text) if isinstance(text, str) else None
    if new is None:
        return data
    # The text is replaced where it stands, so the header stays as its writer wrote it;
    # tensor offsets count from the header's end, padded to 8 bytes with spaces.
    old_json, new_json = json.dumps(text).encode(), json.dumps(new).encode()
    if header.count(old_json) != 1:
        return data
    body = header.replace(old_json, new_json).rstrip(b" ")
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body + data[8 + size :]
