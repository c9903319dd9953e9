"""Tenants never see or touch each other's models."""

from __future__ import annotations

import grpc

from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.models.v1 import models_pb2
from tests.integration.models.conftest import ModelsService, model_file, rpc_error


async def test_another_tenants_model_is_not_found(models: ModelsService) -> None:
    mine = await models.upload("alice", model_file(1), name="shared-name.safetensors")
    bob = tenant_metadata("bob")
    for call in (
        models.stub.GetModel(models_pb2.GetModelRequest(id=mine.id), metadata=bob),
        models.stub.DeleteModel(models_pb2.DeleteModelRequest(id=mine.id), metadata=bob),
    ):
        code, _ = await rpc_error(call)
        assert code == grpc.StatusCode.NOT_FOUND
    listed = await models.stub.ListModels(models_pb2.ListModelsRequest(), metadata=bob)
    assert list(listed.models) == []
    wf = '{"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "shared-name.safetensors"}}}'
    code, violations = await rpc_error(
        models.stub.ResolveModels(models_pb2.ResolveModelsRequest(workflow_json=wf), metadata=bob)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations] == ['workflow["1"].inputs.ckpt_name']
    # Bob's delete attempt changed nothing for Alice.
    alice = tenant_metadata("alice")
    assert (
        await models.stub.GetModel(models_pb2.GetModelRequest(id=mine.id), metadata=alice) == mine
    )


async def test_same_name_and_bytes_in_two_tenants_are_separate(models: ModelsService) -> None:
    blob = model_file(1)
    a = await models.upload("alice", blob)
    b = await models.upload("bob", blob)
    assert a.id != b.id and (a.version, b.version) == (1, 1)
    await models.stub.DeleteModel(
        models_pb2.DeleteModelRequest(id=a.id), metadata=tenant_metadata("alice")
    )
    # Each tenant's files live under its own prefix: Bob's copy is untouched.
    assert await models.object_keys() == [f"tenants/bob/models/{b.sha256}"]


async def test_calls_without_a_tenant_are_unauthenticated(models: ModelsService) -> None:
    code, _ = await rpc_error(models.stub.ListModels(models_pb2.ListModelsRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED
