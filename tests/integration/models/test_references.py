"""ResolveModels with explicit references, as the scheduler sends them from an environment's
catalog: by ComfyUI folder (or by name alone), pinned to the newest version, every missing
one reported at once, and another tenant's models as unknown as missing ones."""

from __future__ import annotations

import grpc

from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.models.v1 import models_pb2
from tests.integration.models.conftest import ModelsService, download, model_file, rpc_error

LORA = models_pb2.MODEL_TYPE_LORA
TEXT_ENCODER = models_pb2.MODEL_TYPE_TEXT_ENCODER


def ref(node: str, input_name: str, name: str, folder: str = "") -> models_pb2.ModelReference:
    return models_pb2.ModelReference(node_id=node, input_name=input_name, name=name, folder=folder)


async def resolve(
    models: ModelsService, tenant: str, *refs: models_pb2.ModelReference
) -> models_pb2.ResolveModelsResponse:
    return await models.stub.ResolveModels(
        models_pb2.ResolveModelsRequest(references=refs), metadata=tenant_metadata(tenant)
    )


async def test_references_resolve_by_folder_to_the_newest_version(models: ModelsService) -> None:
    ckpt = await models.upload("acme", model_file(1), name="base.safetensors")
    await models.upload("acme", model_file(2), name="style.safetensors", model_type=LORA)
    lora = await models.upload("acme", model_file(3), name="style.safetensors", model_type=LORA)
    # A custom loader's input name: what matters is the folder the catalog says it reads.
    response = await resolve(
        models,
        "acme",
        ref("4", "ckpt_name", "base.safetensors", "checkpoints"),
        ref("10", "lora_file", "style.safetensors", "loras"),
    )

    assert [(r.node_id, r.input_name, r.folder, r.model.id) for r in response.models] == [
        ("4", "ckpt_name", "checkpoints", ckpt.id),
        ("10", "lora_file", "loras", lora.id),
    ]
    assert await download(response.models[1].download_url) == model_file(3)


async def test_a_reference_without_a_folder_takes_the_name_of_any_type(
    models: ModelsService,
) -> None:
    encoder = await models.upload(
        "acme", model_file(1), name="t5.safetensors", model_type=TEXT_ENCODER
    )
    response = await resolve(models, "acme", ref("7", "t5_name", "t5.safetensors"))
    # ComfyUI's old folder name for text encoders is still "clip".
    legacy = await resolve(models, "acme", ref("7", "clip_name", "t5.safetensors", "clip"))

    [found] = response.models
    assert (found.model.id, found.folder) == (encoder.id, "text_encoders")
    assert [r.model.id for r in legacy.models] == [encoder.id]


async def test_every_reference_not_registered_in_its_folder_is_reported(
    models: ModelsService,
) -> None:
    await models.upload("acme", model_file(1), name="base.safetensors")
    await models.upload("other", model_file(2), name="theirs.safetensors", model_type=LORA)
    code, violations = await rpc_error(
        resolve(
            models,
            "acme",
            ref("1", "ckpt_name", "base.safetensors", "checkpoints"),
            ref("2", "lora_name", "base.safetensors", "loras"),
            ref("3", "lora_name", "theirs.safetensors", "loras"),
            ref("4", "model", "base.safetensors", "ipadapter"),
        )
    )

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in violations] == [
        ('workflow["2"].inputs.lora_name', "MODEL_NOT_REGISTERED"),
        ('workflow["3"].inputs.lora_name', "MODEL_NOT_REGISTERED"),
        ('workflow["4"].inputs.model', "MODEL_NOT_REGISTERED"),
    ]
    assert "in loras" in violations[0].description


async def test_incomplete_references_are_invalid(models: ModelsService) -> None:
    code, violations = await rpc_error(
        resolve(models, "acme", ref("", "ckpt_name", "a.safetensors"), ref("2", "x", ""))
    )

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations] == ["references[0].node_id", "references[1].name"]
