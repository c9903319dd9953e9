"""Model resolution with a real models service. Which inputs name models, and which of those
the environment carries, come from the environment's catalog (here the real ComfyUI 0.3.64's,
which carries ``tiny-sd15.safetensors``): a carried model needs no registration and is not
resolved; any other must be registered, and the executor is handed it pinned by sha256 with a
download URL; an unknown model is refused at submit time and stores nothing; executors that
hold the model in their cache are preferred."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from comfyfleet.common.errors import field_violations, from_rpc_error
from comfyfleet.common.grpcserver import channel
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from services.models.config import MIB
from services.models.config import Config as ModelsConfig
from services.models.server import run_server
from services.scheduler.config import Config
from tests.integration.models.conftest import model_file
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import (
    STATE,
    comfyui_object_info_json,
    create,
    declare_by_registering,
    wait_for_state,
)
from tests.integration.scheduler.scripted_executor import RunningExecutor, Script, succeed
from tests.integration.scheduler.scripted_executor import scripted_executor as plain_executor
from tests.support.infra import S3Info

TENANT = "acme"
PNG = b"\x89PNG"
ENV = "comfy-sd15"
CARRIED = "tiny-sd15.safetensors"


def scripted_executor(
    address: str, executor_id: str, *scripts: Script, **options: Any
) -> contextlib.AbstractAsyncContextManager[RunningExecutor]:
    """An executor of the ComfyUI environment, registering with its real catalog."""
    return plain_executor(
        address,
        executor_id,
        *scripts,
        environment=ENV,
        engine="comfyui",
        object_info_json=comfyui_object_info_json(),
        **options,
    )


async def submit(clients: Clients, tenant: str, **fields: Any) -> executions_pb2.Execution:
    return await create(clients, tenant, environment=ENV, **fields)


def workflow(ckpt: str, lora: str | None = None) -> str:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "r"}},
    }
    if lora:
        graph["2"] = {
            "class_type": "LoraLoader",
            "inputs": {"lora_name": lora, "model": ["1", 0], "clip": ["1", 1]},
        }
        graph["3"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}
    return json.dumps(graph)


@contextlib.asynccontextmanager
async def models_service(
    scheduler: Config,
) -> AsyncIterator[tuple[str, models_pb2_grpc.ModelServiceStub]]:
    """The real models service on the scheduler's database (its own schema) and bucket."""
    cfg = ModelsConfig(
        grpc_addr="127.0.0.1:0",
        database=scheduler.database,
        s3=scheduler.s3,
        max_model_bytes=32 * MIB,
        shutdown_grace_s=1.0,
    )
    async with run_server(cfg) as server:
        address = f"127.0.0.1:{server.port}"
        async with channel(address) as ch:
            yield address, models_pb2_grpc.ModelServiceStub(ch)


async def upload(
    stub: models_pb2_grpc.ModelServiceStub, name: str, kind: models_pb2.ModelType, blob: bytes
) -> models_pb2.Model:
    first = models_pb2.UploadModelRequest(model=models_pb2.Model(name=name, type=kind))
    requests = [first, models_pb2.UploadModelRequest(chunk=blob)]
    return await stub.UploadModel(iter(requests), metadata=tenant_metadata(TENANT))


@pytest.fixture
async def resolving(
    start_scheduler: StartScheduler, scheduler_config: Config
) -> AsyncIterator[tuple[Clients, models_pb2_grpc.ModelServiceStub]]:
    async with (
        models_service(scheduler_config) as (address, stub),
        start_scheduler(models_addr=address) as running,
        clients_of(running) as clients,
    ):
        yield clients, stub


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        response.raise_for_status()
        return await response.read()


async def test_the_executor_gets_each_model_pinned_with_a_download_url(
    resolving: tuple[Clients, models_pb2_grpc.ModelServiceStub],
) -> None:
    clients, stub = resolving
    ckpt_bytes, lora_bytes = model_file(1), model_file(2)
    ckpt = await upload(stub, "sd15.safetensors", models_pb2.MODEL_TYPE_CHECKPOINT, ckpt_bytes)
    lora = await upload(stub, "ink.safetensors", models_pb2.MODEL_TYPE_LORA, lora_bytes)
    async with scripted_executor(clients.address, "ex-1", succeed(("9", "a.png", PNG))) as ex:
        execution = await submit(
            clients, TENANT, workflow_json=workflow("sd15.safetensors", "ink.safetensors")
        )
        await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    [request] = ex.servicer.calls
    refs = [(m.folder, m.name, m.sha256, m.size_bytes) for m in request.models]
    assert refs == [
        ("checkpoints", "sd15.safetensors", ckpt.sha256, len(ckpt_bytes)),
        ("loras", "ink.safetensors", lora.sha256, len(lora_bytes)),
    ], "two nodes naming one checkpoint need it once"
    assert [await download(m.url) for m in request.models] == [ckpt_bytes, lora_bytes]


async def test_an_unregistered_model_is_refused_and_nothing_is_stored(
    resolving: tuple[Clients, models_pb2_grpc.ModelServiceStub],
    scheduler_config: Config,
    s3_server: S3Info,
) -> None:
    clients, _ = resolving
    await declare_by_registering(clients, ENV, comfyui_object_info_json())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(
            clients,
            TENANT,
            workflow_json=workflow("missing.safetensors"),
            inputs=[executions_pb2.InputFile(name="cat.png", content=b"cat")],
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(from_rpc_error(caught.value).status)
    assert [(v.field, v.reason) for v in violations] == [
        ('workflow["1"].inputs.ckpt_name', "MODEL_NOT_REGISTERED")
    ]
    listed = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(), metadata=clients.as_tenant(TENANT)
    )
    assert list(listed.executions) == []
    stored = s3_server.client().list_objects(
        scheduler_config.s3.bucket, prefix=f"tenants/{TENANT}/executions/", recursive=True
    )
    assert list(stored) == [], "the input file was not kept either"


async def test_another_tenants_model_is_as_unknown_as_a_missing_one(
    resolving: tuple[Clients, models_pb2_grpc.ModelServiceStub],
) -> None:
    clients, stub = resolving
    await upload(stub, "mine.safetensors", models_pb2.MODEL_TYPE_CHECKPOINT, model_file(3))
    await declare_by_registering(clients, ENV, comfyui_object_info_json())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(clients, "other-tenant", workflow_json=workflow("mine.safetensors"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(from_rpc_error(caught.value).status)
    assert [v.reason for v in violations] == ["MODEL_NOT_REGISTERED"]


async def test_a_models_service_that_is_down_refuses_the_submission(
    start_scheduler: StartScheduler,
) -> None:
    async with (
        start_scheduler(models_addr="127.0.0.1:1") as running,
        clients_of(running) as clients,
    ):
        await declare_by_registering(clients, ENV, comfyui_object_info_json())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(clients, TENANT, workflow_json=workflow("sd15.safetensors"))
        listed = await clients.executions.ListExecutions(
            executions_pb2.ListExecutionsRequest(), metadata=clients.as_tenant(TENANT)
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert list(listed.executions) == []


async def test_an_executor_with_the_model_cached_is_preferred(
    resolving: tuple[Clients, models_pb2_grpc.ModelServiceStub],
) -> None:
    clients, stub = resolving
    ckpt = await upload(stub, "sd15.safetensors", models_pb2.MODEL_TYPE_CHECKPOINT, model_file(4))
    async with (
        scripted_executor(
            clients.address, "ex-a-roomy", succeed(("9", "a.png", PNG)), free_memory_bytes=80
        ) as roomy,
        scripted_executor(
            clients.address,
            "ex-b-warm",
            succeed(("9", "a.png", PNG)),
            free_memory_bytes=40,
            cached_models=(ckpt.sha256,),
        ) as warm,
    ):
        with_model = await submit(clients, TENANT, workflow_json=workflow("sd15.safetensors"))
        await wait_for_state(clients, TENANT, with_model.id, STATE.EXECUTION_STATE_SUCCEEDED)
        without = await submit(clients, TENANT)
        await wait_for_state(clients, TENANT, without.id, STATE.EXECUTION_STATE_SUCCEEDED)
    assert warm.servicer.attempts() == [(with_model.id, 1)]
    assert roomy.servicer.attempts() == [(without.id, 1)]


async def test_a_model_the_environment_carries_needs_no_registration(
    resolving: tuple[Clients, models_pb2_grpc.ModelServiceStub],
) -> None:
    clients, stub = resolving
    lora_bytes = model_file(5)
    await upload(stub, "ink.safetensors", models_pb2.MODEL_TYPE_LORA, lora_bytes)
    async with scripted_executor(clients.address, "ex-1", succeed(("9", "a.png", PNG))) as ex:
        carried = await submit(clients, TENANT, workflow_json=workflow(CARRIED))
        await wait_for_state(clients, TENANT, carried.id, STATE.EXECUTION_STATE_SUCCEEDED)
        mixed = await submit(clients, TENANT, workflow_json=workflow(CARRIED, "ink.safetensors"))
        await wait_for_state(clients, TENANT, mixed.id, STATE.EXECUTION_STATE_SUCCEEDED)
    first, second = ex.servicer.calls
    assert list(first.models) == [], "the environment's own checkpoint is not resolved"
    assert [(m.folder, m.name) for m in second.models] == [("loras", "ink.safetensors")]


async def test_a_registered_model_of_the_same_name_as_a_carried_one_is_not_used(
    resolving: tuple[Clients, models_pb2_grpc.ModelServiceStub],
) -> None:
    """The environment's choices win: the executor reads its own file."""
    clients, stub = resolving
    await upload(stub, CARRIED, models_pb2.MODEL_TYPE_CHECKPOINT, model_file(6))
    async with scripted_executor(clients.address, "ex-1", succeed(("9", "a.png", PNG))) as ex:
        execution = await submit(clients, TENANT, workflow_json=workflow(CARRIED))
        await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    [request] = ex.servicer.calls
    assert list(request.models) == []


async def test_a_workflow_naming_no_model_of_its_catalog_never_asks_the_models_service(
    start_scheduler: StartScheduler,
) -> None:
    """Native executions (the default environment) name no model files: with the models
    service down they are accepted all the same."""
    async with (
        start_scheduler(models_addr="127.0.0.1:1") as running,
        clients_of(running) as clients,
    ):
        execution = await create(clients, TENANT)
    assert execution.environment == "native"
    assert execution.state == STATE.EXECUTION_STATE_QUEUED
