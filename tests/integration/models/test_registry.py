"""Upload, read, page, resolve and delete through a real server, PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import grpc

from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.models.v1 import models_pb2
from tests.integration.models.conftest import (
    ModelsService,
    download,
    model_file,
    rpc_error,
    sha256,
)

LORA = models_pb2.MODEL_TYPE_LORA
CHECKPOINT = models_pb2.MODEL_TYPE_CHECKPOINT


def workflow(nodes: Mapping[str, tuple[str, Mapping[str, object]]]) -> str:
    return json.dumps(
        {node_id: {"class_type": ct, "inputs": inputs} for node_id, (ct, inputs) in nodes.items()}
    )


async def test_upload_in_chunks_then_get(models: ModelsService) -> None:
    blob = model_file(1)
    model = await models.upload("acme", blob, name="sd15.safetensors", chunk=1000)
    assert model.id.startswith("mdl_")
    assert (model.tenant, model.name, model.type, model.version) == (
        "acme",
        "sd15.safetensors",
        CHECKPOINT,
        1,
    )
    assert model.sha256 == sha256(blob)
    assert model.size_bytes == len(blob)
    assert model.format == "safetensors"
    meta = dict(model.metadata)
    assert meta["tensor_count"] == 2
    assert meta["parameters"] == 4 * 768 + 1000
    assert dict(meta["dtypes"]) == {"F16": 1, "F32": 1}
    assert dict(meta["file_metadata"]) == {"seed": "1"}
    assert meta["architecture"] == "sd15"
    assert model.create_time.seconds > 0
    got = await models.stub.GetModel(
        models_pb2.GetModelRequest(id=model.id), metadata=tenant_metadata("acme")
    )
    assert got == model
    assert await models.object_keys() == [f"tenants/acme/models/{sha256(blob)}"]


async def test_same_bytes_again_is_the_same_version(models: ModelsService) -> None:
    first = await models.upload("acme", model_file(1), name="a.safetensors")
    again = await models.upload("acme", model_file(1), name="a.safetensors", chunk=333)
    assert again == first
    second = await models.upload("acme", model_file(2), name="a.safetensors")
    assert second.version == 2
    # Going back to the first bytes finds their version rather than making a third.
    assert await models.upload("acme", model_file(1), name="a.safetensors") == first
    # The same name as another type is a model of its own.
    assert (
        await models.upload("acme", model_file(1), name="a.safetensors", model_type=LORA)
    ).version == 1
    assert await models.row_count() == 3


async def test_concurrent_uploads_of_one_name(models: ModelsService) -> None:
    same = await asyncio.gather(*(models.upload("acme", model_file(7)) for _ in range(3)))
    assert len({m.id for m in same}) == 1
    different = await asyncio.gather(
        *(models.upload("acme", model_file(s), name="b.safetensors") for s in (10, 11, 12))
    )
    assert sorted(m.version for m in different) == [1, 2, 3]


async def test_large_file_goes_up_in_parts_and_downloads_intact(models: ModelsService) -> None:
    # 2.5M float32 values: 10 MB, two 5 MiB parts.
    blob = model_file(3, elements=2_500_000)
    model = await models.upload("acme", blob, chunk=1024 * 1024)
    resolved = await models.stub.ResolveModels(
        models_pb2.ResolveModelsRequest(
            workflow_json=workflow({"1": ("CheckpointLoaderSimple", {"ckpt_name": model.name})})
        ),
        metadata=tenant_metadata("acme"),
    )
    data = await download(resolved.models[0].download_url)
    assert len(data) == len(blob)
    assert sha256(data) == model.sha256 == sha256(blob)


async def test_list_pages_and_filters_by_type(models: ModelsService) -> None:
    uploaded = [
        await models.upload("acme", model_file(i), name=f"m{i}.safetensors", model_type=t)
        for i, t in enumerate([CHECKPOINT, LORA, CHECKPOINT, LORA, LORA])
    ]
    meta = tenant_metadata("acme")
    seen: list[str] = []
    token = ""
    while True:
        page = await models.stub.ListModels(
            models_pb2.ListModelsRequest(page_size=2, page_token=token), metadata=meta
        )
        assert len(page.models) <= 2
        seen += [m.id for m in page.models]
        token = page.next_page_token
        if not token:
            break
    assert seen == [m.id for m in uploaded]
    loras = await models.stub.ListModels(models_pb2.ListModelsRequest(type=LORA), metadata=meta)
    assert [m.id for m in loras.models] == [uploaded[i].id for i in (1, 3, 4)]
    assert loras.next_page_token == ""


async def test_bad_list_requests(models: ModelsService) -> None:
    meta = tenant_metadata("acme")
    for request, field in [
        (models_pb2.ListModelsRequest(page_size=-1), "page_size"),
        (models_pb2.ListModelsRequest(page_token="garbage!"), "page_token"),
        (models_pb2.ListModelsRequest(type=99), "type"),  # type: ignore[arg-type]
    ]:
        code, violations = await rpc_error(models.stub.ListModels(request, metadata=meta))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in violations] == [field]


async def test_resolve_gives_latest_versions_with_working_urls(models: ModelsService) -> None:
    ckpt = model_file(1)
    lora_v1, lora_v2 = model_file(2), model_file(3)
    await models.upload("acme", ckpt, name="base.safetensors")
    await models.upload("acme", lora_v1, name="style.safetensors", model_type=LORA)
    latest = await models.upload("acme", lora_v2, name="style.safetensors", model_type=LORA)
    wf = workflow(
        {
            "4": ("CheckpointLoaderSimple", {"ckpt_name": "base.safetensors"}),
            "10": ("LoraLoader", {"lora_name": "style.safetensors", "model": ["4", 0]}),
            "3": ("KSampler", {"seed": 5, "model": ["10", 0]}),
        }
    )
    response = await models.stub.ResolveModels(
        models_pb2.ResolveModelsRequest(workflow_json=wf), metadata=tenant_metadata("acme")
    )
    assert [(r.node_id, r.input_name, r.folder) for r in response.models] == [
        ("4", "ckpt_name", "checkpoints"),
        ("10", "lora_name", "loras"),
    ]
    assert response.models[1].model == latest
    for resolved, blob in zip(response.models, [ckpt, lora_v2], strict=True):
        data = await download(resolved.download_url)
        assert data == blob
        assert sha256(data) == resolved.model.sha256


async def test_resolve_reports_every_unregistered_model(models: ModelsService) -> None:
    await models.upload("acme", model_file(1), name="base.safetensors")
    wf = workflow(
        {
            "1": ("CheckpointLoaderSimple", {"ckpt_name": "base.safetensors"}),
            "2": ("LoraLoader", {"lora_name": "missing.safetensors"}),
            "3": ("VAELoader", {"vae_name": "base.safetensors"}),
        }
    )
    code, violations = await rpc_error(
        models.stub.ResolveModels(
            models_pb2.ResolveModelsRequest(workflow_json=wf), metadata=tenant_metadata("acme")
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations] == [
        'workflow["2"].inputs.lora_name',
        'workflow["3"].inputs.vae_name',
    ]
    assert "missing.safetensors" in violations[0].description
    assert "not registered" in violations[1].description


async def test_resolve_without_models_and_with_bad_json(models: ModelsService) -> None:
    meta = tenant_metadata("acme")
    empty = await models.stub.ResolveModels(
        models_pb2.ResolveModelsRequest(
            workflow_json=workflow({"1": ("EmptyLatentImage", {"width": 64})})
        ),
        metadata=meta,
    )
    assert list(empty.models) == []
    code, violations = await rpc_error(
        models.stub.ResolveModels(
            models_pb2.ResolveModelsRequest(workflow_json="{nope"), metadata=meta
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations] == ["workflow_json"]


async def test_delete_removes_row_and_file(models: ModelsService) -> None:
    meta = tenant_metadata("acme")
    model = await models.upload("acme", model_file(1))
    await models.stub.DeleteModel(models_pb2.DeleteModelRequest(id=model.id), metadata=meta)
    code, _ = await rpc_error(
        models.stub.GetModel(models_pb2.GetModelRequest(id=model.id), metadata=meta)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert await models.row_count() == 0
    assert await models.object_keys() == []
    code, _ = await rpc_error(
        models.stub.DeleteModel(models_pb2.DeleteModelRequest(id=model.id), metadata=meta)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    # A later upload never reuses a deleted version's number.
    assert (await models.upload("acme", model_file(2))).version == 2


async def test_a_shared_file_stays_until_its_last_model_goes(models: ModelsService) -> None:
    meta = tenant_metadata("acme")
    blob = model_file(1)
    a = await models.upload("acme", blob, name="a.safetensors")
    b = await models.upload("acme", blob, name="b.safetensors")
    await models.stub.DeleteModel(models_pb2.DeleteModelRequest(id=a.id), metadata=meta)
    assert await models.object_keys() == [f"tenants/acme/models/{sha256(blob)}"]
    resolved = await models.stub.ResolveModels(
        models_pb2.ResolveModelsRequest(
            workflow_json=workflow({"1": ("CheckpointLoaderSimple", {"ckpt_name": b.name})})
        ),
        metadata=meta,
    )
    assert await download(resolved.models[0].download_url) == blob
    await models.stub.DeleteModel(models_pb2.DeleteModelRequest(id=b.id), metadata=meta)
    assert await models.object_keys() == []


async def test_get_and_delete_need_an_id(models: ModelsService) -> None:
    meta = tenant_metadata("acme")
    for call in (
        models.stub.GetModel(models_pb2.GetModelRequest(), metadata=meta),
        models.stub.DeleteModel(models_pb2.DeleteModelRequest(), metadata=meta),
    ):
        code, violations = await rpc_error(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in violations] == ["id"]
