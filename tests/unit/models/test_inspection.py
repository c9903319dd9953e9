"""Accepting only safetensors: names, pickles, zip archives, and the metadata recorded."""

from __future__ import annotations

import io
import json

import pytest
import torch

from comfyfleet.common.errors import InvalidArgument
from services.models.inspection import (
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    REASON_BAD_FILE,
    REASON_BAD_NAME,
    REASON_PICKLE,
    inspect_stream,
    name_violations,
)
from tests.unit.models.files import (
    join,
    legacy_torch_bytes,
    pickle_bytes,
    safetensors_bytes,
    small_file,
    split,
    zip_torch_bytes,
)


def inspect(blob: bytes) -> dict:
    return inspect_stream(io.BytesIO(blob), len(blob))


def refusal(blob: bytes) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        inspect(blob)
    return caught.value


@pytest.mark.parametrize(
    "name", ["sd15.safetensors", "My LoRA v2 (final).SAFETENSORS", "flux_dev-fp8.safetensors"]
)
def test_good_names(name: str) -> None:
    assert name_violations(name) == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "model",
        ".safetensors",
        ".hidden.safetensors",
        "sdxl/base.safetensors",
        "..\\evil.safetensors",
        "a:b.safetensors",
        'quote".safetensors',
        " padded.safetensors",
        "line\nbreak.safetensors",
        "x" * 250 + ".safetensors",
        "model.gguf",
    ],
)
def test_bad_names(name: str) -> None:
    [violation] = name_violations(name)
    assert violation.field == "model.name"
    assert violation.reason == REASON_BAD_NAME


@pytest.mark.parametrize(
    "name", ["v1-5.ckpt", "model.pt", "model.PTH", "pytorch_model.bin", "x.pkl", "x.pickle"]
)
def test_pickle_extensions_are_refused_by_name(name: str) -> None:
    [violation] = name_violations(name)
    assert violation.reason == REASON_PICKLE
    assert "safetensors" in violation.description


@pytest.mark.parametrize(
    "blob", [pickle_bytes(), legacy_torch_bytes()], ids=["pickle", "legacy-torch-save"]
)
def test_pickles_are_refused_by_content(blob: bytes) -> None:
    err = refusal(blob)
    assert err.reason == REASON_PICKLE
    [violation] = err.violations
    assert violation.field == "chunk"
    assert "pickle" in violation.description


def test_zip_archives_are_refused_by_content() -> None:
    err = refusal(zip_torch_bytes())
    assert err.reason == REASON_PICKLE
    assert "zip" in err.violations[0].description


def test_zip_magic_is_refused_even_with_a_plausible_header() -> None:
    assert refusal(b"PK\x03\x04" + bytes(4) + b"{}").reason == REASON_PICKLE


def test_corrupt_safetensors_is_refused_with_the_reason() -> None:
    err = refusal(small_file()[:-3])
    assert err.reason == REASON_BAD_FILE
    [violation] = err.violations
    assert violation.field == "chunk"
    assert "past the" in violation.description


def test_valid_file_whose_length_prefix_looks_like_pickle_is_accepted() -> None:
    # A header of 0x280 bytes starts the file with 80 02, pickle's PROTO 2; it is still a
    # valid safetensors file, which the safetensors loader reads without unpickling.
    header, data = split(safetensors_bytes({"t": torch.ones(2)}))
    raw = json.dumps(header).encode()
    raw += b" " * (0x280 - len(raw))
    blob = join(raw, data)
    assert blob[:2] == b"\x80\x02"
    assert inspect(blob)["tensor_count"] == 1


def test_metadata_counts_tensors_parameters_and_dtypes() -> None:
    meta = inspect(small_file())
    assert meta["tensor_count"] == 3
    assert meta["parameters"] == 6 + 4 + 3
    assert meta["dtypes"] == {"BOOL": 1, "F16": 1, "F32": 1}
    assert meta["file_metadata"] == {"format": "pt", "ss_network_dim": "4"}
    assert meta["file_metadata_truncated"] is False
    assert meta["header_bytes"] > 0
    assert meta["component"] == "unknown"
    assert meta["architecture"] == "unknown"


def test_metadata_of_an_empty_file() -> None:
    meta = inspect(safetensors_bytes({}))
    assert meta["tensor_count"] == 0
    assert meta["parameters"] == 0
    assert meta["dtypes"] == {}


def test_huge_file_metadata_is_cut_down() -> None:
    big = {f"k{i:04d}": "v" for i in range(MAX_METADATA_KEYS + 5)}
    big["k0000"] = "x" * (MAX_METADATA_VALUE_CHARS + 1)
    meta = inspect(safetensors_bytes({"t": torch.ones(1)}, metadata=big))
    assert len(meta["file_metadata"]) == MAX_METADATA_KEYS
    assert meta["file_metadata"]["k0000"] == "x" * MAX_METADATA_VALUE_CHARS
    assert meta["file_metadata_truncated"] is True
