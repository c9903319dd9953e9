"""Salting prompts per tenant and giving files back as submitted (no ComfyUI, no I/O)."""

from __future__ import annotations

import copy
import gzip
import io
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from services.executor.comfyui.isolation import SALT_INPUT, Isolated, Isolation, NodeKinds
from tests.support.paths import comfyui_ref
from tests.support.tenant_leak import tenant_a_workflow, tenant_b_workflow

A, B = "tenant:a", "tenant:b"


@cache
def kinds() -> NodeKinds:
    """Of the real ComfyUI 0.3.64's every node type."""
    info = json.loads(gzip.decompress((comfyui_ref() / "object_info_full.json.gz").read_bytes()))
    return NodeKinds.from_object_info(info)


def isolate(
    prompt: dict[str, Any],
    scope: str = A,
    models: dict[str, Path] | None = None,
    inputs: list[tuple[str, bytes]] | None = None,
    secret: bytes = b"s",
) -> Isolated:
    return Isolation(secret).isolate(
        prompt, copy.deepcopy(prompt), scope, kinds(), models or {}, inputs or []
    )


def salts(isolated: Isolated) -> dict[str, str]:
    return {n: node["inputs"][SALT_INPUT] for n, node in isolated.prompt.items()}


TXT2IMG = json.loads((comfyui_ref() / "workflows" / "t01_txt2img.json").read_text())
CHECKPOINT = next(n for n, v in TXT2IMG.items() if v["class_type"] == "CheckpointLoaderSimple")
SAVER = next(n for n, v in TXT2IMG.items() if v["class_type"] == "SaveImage")


def test_node_kinds_of_the_real_catalog() -> None:
    loaders = kinds().weight_loaders
    assert {"CheckpointLoaderSimple", "LoraLoader", "VAELoader", "UNETLoader"} <= loaders
    # Loaders of images, or of what a run trained, hold a tenant's data.
    assert not {"LoadImageSetFromFolderNode", "SaveLoRANode", "LoadImage"} & loaders
    embeds = kinds().embeds_prompt
    assert {"SaveImage", "PreviewImage", "SaveLatent", "SaveAnimatedPNG"} <= embeds
    assert not {"EmptyImage", "KSampler"} & embeds


def test_every_node_is_salted_and_a_sent_salt_is_overwritten() -> None:
    prompt = tenant_a_workflow()
    prompt["1"]["inputs"][SALT_INPUT] = "forged"

    isolated = isolate(prompt)

    assert set(salts(isolated)) == set(prompt)
    assert "forged" not in salts(isolated).values()
    # Declared inputs are untouched, except where saves go.
    assert {k: v for k, v in isolated.prompt["1"]["inputs"].items() if k != SALT_INPUT} == {
        k: v for k, v in prompt["1"]["inputs"].items() if k != SALT_INPUT
    }


def test_scopes_get_different_salts_and_a_scope_the_same() -> None:
    a, b = salts(isolate(tenant_b_workflow(), A)), salts(isolate(tenant_b_workflow(), B))
    assert not set(a.values()) & set(b.values())
    assert salts(isolate(tenant_b_workflow(), A)) == a
    # The salts are the engine's secret's: another secret, other salts.
    assert salts(isolate(tenant_b_workflow(), A, secret=b"t"))["1"] != a["1"]


def test_an_output_node_is_salted_with_the_whole_prompt_and_its_inputs() -> None:
    a, b = salts(isolate(tenant_a_workflow())), salts(isolate(tenant_b_workflow()))
    # Node 99 feeds nothing: the image is shared within the tenant, the file is not.
    assert a["1"] == b["1"] and a["3"] != b["3"]
    titled = tenant_b_workflow()
    titled["1"]["_meta"] = {"title": "renamed"}
    assert salts(isolate(titled))["3"] != b["3"]
    with_input = salts(isolate(tenant_b_workflow(), inputs=[("x.png", b"1")]))
    assert with_input["1"] == b["1"] and with_input["3"] != b["3"]
    other_input = salts(isolate(tenant_b_workflow(), inputs=[("x.png", b"2")]))
    assert other_input["3"] != with_input["3"]


def test_weight_loaders_are_shared_by_tenants_unless_their_files_differ(tmp_path: Path) -> None:
    a, b = salts(isolate(TXT2IMG, A)), salts(isolate(TXT2IMG, B))
    assert a[CHECKPOINT] == b[CHECKPOINT]
    assert all(a[n] != b[n] for n in TXT2IMG if n != CHECKPOINT)
    name = TXT2IMG[CHECKPOINT]["inputs"]["ckpt_name"]
    (tmp_path / "one").write_bytes(b"1")
    (tmp_path / "two").write_bytes(b"2")
    one = salts(isolate(TXT2IMG, A, {f"checkpoints/{name}": tmp_path / "one"}))
    two = salts(isolate(TXT2IMG, B, {f"checkpoints/{name}": tmp_path / "two"}))
    again = salts(isolate(TXT2IMG, B, {f"checkpoints/{name}": tmp_path / "one"}))
    assert one[CHECKPOINT] != two[CHECKPOINT] and one[CHECKPOINT] == again[CHECKPOINT]


def test_a_loader_fed_by_a_tenants_node_is_the_tenants() -> None:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0]}},
        "3": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["2", 0]}},
        "4": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["3", 0]}},
        "5": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["6", 0]}},
        "6": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["5", 0]}},
    }
    a, b = salts(isolate(prompt, A)), salts(isolate(prompt, B))
    assert [n for n in prompt if a[n] == b[n]] == ["1", "2"]


@pytest.mark.parametrize(
    ("prefix", "sent"),
    [
        ("ComfyUI", "{f}/ComfyUI"),
        ("sub/x", "{f}/sub/x"),
        ("a/../b", "{f}/a/../b"),
        ("", "{f}/"),
        ("../escape", "../escape"),
        ("a/../../escape", "a/../../escape"),
        ("/abs/x", "/abs/x"),
    ],
)
def test_saves_go_into_the_scopes_folder(prefix: str, sent: str) -> None:
    prompt = tenant_b_workflow()
    prompt["3"]["inputs"]["filename_prefix"] = prefix

    isolated = isolate(prompt)

    assert isolated.output_folder.startswith("comfyfleet-")
    assert isolated.prompt["3"]["inputs"]["filename_prefix"] == sent.format(
        f=isolated.output_folder
    )
    assert isolate(prompt, B).output_folder != isolated.output_folder


def test_reported_subfolders_lose_the_scopes_folder() -> None:
    isolated = isolate(tenant_b_workflow())
    folder = isolated.output_folder
    assert isolated.client_subfolder(folder) == ""
    assert isolated.client_subfolder(f"{folder}/latents/x") == "latents/x"
    assert isolated.client_subfolder("elsewhere") == "elsewhere"


def test_upload_names_differ_by_scope_and_content() -> None:
    isolation = Isolation(b"s")
    name = isolation.upload_name(A, b"x", "sub/a.png")
    assert name.startswith("comfyfleet-") and name.endswith("/sub/a.png")
    assert isolation.upload_name(A, b"x", "sub/a.png") == name
    assert isolation.upload_name(B, b"x", "sub/a.png") != name
    assert isolation.upload_name(A, b"y", "sub/a.png") != name


def as_comfyui_embeds(sent: dict[str, Any]) -> dict[str, Any]:
    """The prompt ComfyUI embeds: the one it ran, with ``is_changed`` added where known."""
    embedded = copy.deepcopy(sent)
    embedded["1"]["is_changed"] = ["abc"]
    return embedded


def png(chunks: dict[str, str]) -> bytes:
    info = PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    out = io.BytesIO()
    Image.new("RGB", (2, 2), (1, 2, 3)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_a_png_embeds_the_submitted_prompt_again() -> None:
    submitted = tenant_b_workflow()
    isolated = isolate(submitted)
    ran = png({"prompt": json.dumps(as_comfyui_embeds(isolated.prompt)), "workflow": "{}"})

    restored = isolated.restored("x.png", ran)

    image = Image.open(io.BytesIO(restored))
    expected = copy.deepcopy(submitted)
    expected["1"]["is_changed"] = ["abc"]
    # Byte for byte what ComfyUI writes for the submitted workflow: json.dumps of its prompt.
    assert image.info["prompt"] == json.dumps(expected)
    assert image.info["workflow"] == "{}"
    assert image.tobytes() == Image.open(io.BytesIO(ran)).tobytes()
    Image.open(io.BytesIO(restored)).verify()  # every chunk's CRC


def test_a_file_already_as_submitted_is_left_alone() -> None:
    submitted = tenant_b_workflow()
    isolated = isolate(submitted)
    same = png({"prompt": json.dumps(submitted)})
    assert isolated.restored("x.png", same) is same
    assert isolated.restored("x.webp", b"RIFF....") == b"RIFF...."


def safetensors_file(prompt_text: str) -> bytes:
    """A latent as ComfyUI saves one: metadata first, header padded to 8 with spaces."""
    header = {
        "__metadata__": {"prompt": prompt_text},
        "latent_tensor": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    }
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body + struct.pack("<f", 1.5)


def test_a_latent_embeds_the_submitted_prompt_again() -> None:
    submitted = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}},
    }
    isolated = isolate(submitted)

    restored = isolated.restored("x_00001_.latent", safetensors_file(json.dumps(isolated.prompt)))

    assert restored == safetensors_file(json.dumps(submitted))
