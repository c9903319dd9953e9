"""Refused uploads say why, field by field, and leave no row, object or temp file behind."""

from __future__ import annotations

import io
import pickle
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import torch

from comfyfleet.models.v1 import models_pb2
from tests.integration.models.conftest import ModelsService, model_file, rpc_error

Request = models_pb2.UploadModelRequest


def header(name: str = "m.safetensors", model_type: int = models_pb2.MODEL_TYPE_LORA) -> Request:
    return Request(model=models_pb2.Model(name=name, type=model_type))  # type: ignore[arg-type]


def chunks(blob: bytes, size: int = 4096) -> list[Request]:
    return [Request(chunk=blob[i : i + size]) for i in range(0, len(blob), size)]


def torch_save(**kwargs: object) -> bytes:
    out = io.BytesIO()
    torch.save({"w": torch.ones(8)}, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


GOOD = model_file(1)
TRUNCATED = GOOD[:-10]
BAD_UPLOADS: dict[str, tuple[list[Request], str, str]] = {
    "pickle named .safetensors": (
        [header(), *chunks(pickle.dumps({"w": [1.0]}, protocol=4))],
        "chunk",
        "PICKLE_FORMAT_REFUSED",
    ),
    "legacy torch.save": (
        [header(), *chunks(torch_save(_use_new_zipfile_serialization=False))],
        "chunk",
        "PICKLE_FORMAT_REFUSED",
    ),
    "torch.save zip": ([header(), *chunks(torch_save())], "chunk", "PICKLE_FORMAT_REFUSED"),
    "truncated safetensors": (
        [header(), *chunks(TRUNCATED)],
        "chunk",
        "INVALID_SAFETENSORS",
    ),
    "empty file": ([header()], "chunk", "INVALID_SAFETENSORS"),
    ".ckpt name": ([header("v1-5.ckpt"), *chunks(GOOD)], "model.name", "PICKLE_FORMAT_REFUSED"),
    "name with a folder": (
        [header("sdxl/x.safetensors"), *chunks(GOOD)],
        "model.name",
        "INVALID_MODEL_NAME",
    ),
    "no name": ([header(""), *chunks(GOOD)], "model.name", "INVALID_MODEL_NAME"),
    "no type": (
        [header(model_type=models_pb2.MODEL_TYPE_UNSPECIFIED), *chunks(GOOD)],
        "model.type",
        "",
    ),
    "unknown type": ([header(model_type=77), *chunks(GOOD)], "model.type", ""),
    "chunk first": ([*chunks(GOOD), header()], "model", ""),
    "nothing at all": ([], "model", ""),
    "model twice": ([header(), *chunks(GOOD[:100]), header()], "model", ""),
}


@pytest.fixture
async def models_spooling_to(
    start_models: Callable[..., AsyncIterator[ModelsService]], tmp_path: Path
) -> AsyncIterator[tuple[ModelsService, Path]]:
    async for service in start_models(spool_dir=tmp_path, max_model_bytes=len(GOOD)):
        yield service, tmp_path


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
async def test_bad_upload_is_refused_and_stores_nothing(
    models_spooling_to: tuple[ModelsService, Path], case: str
) -> None:
    models, spool_dir = models_spooling_to
    requests, field, reason = BAD_UPLOADS[case]
    code, violations = await rpc_error(models.upload_raw("acme", requests))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations] == [field]
    assert violations[0].reason == reason
    assert await models.row_count() == 0
    assert await models.object_keys() == []
    assert list(spool_dir.iterdir()) == []


async def test_file_over_the_size_limit(models_spooling_to: tuple[ModelsService, Path]) -> None:
    models, spool_dir = models_spooling_to
    too_big = model_file(1, elements=1010)
    code, violations = await rpc_error(models.upload("acme", too_big))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in violations] == [("chunk", "MODEL_TOO_LARGE")]
    assert (await models.row_count(), await models.object_keys()) == (0, [])
    assert list(spool_dir.iterdir()) == []
    # Right at the limit is fine.
    assert (await models.upload("acme", GOOD)).size_bytes == len(GOOD)
