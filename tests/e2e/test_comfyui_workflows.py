"""Real diffusion workflows through the whole platform, on a real ComfyUI 0.3.64.

The platform runs its native executor and an executor of a "comfyui" environment ("sd15")
that starts and supervises a real ComfyUI. The environment is made as an image build makes
it, by the install step: our test custom node package, and the test checkpoint baked in
(``tiny-sd15.safetensors``); a tenant may also register the same file under another name and
run it from the registry.
Outputs must equal what that ComfyUI produced on its own (``../shared/comfyui-server/reference``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from PIL import Image

from comfyfleet.devstack.launcher import ComfyUIExecutor
from comfyfleet.environments.v1 import environments_pb2, environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk import ApiError, AsyncClient, Settings
from tests.e2e.conftest import Platform
from tests.e2e.receiver import webhook_receiver
from tests.e2e.test_first_workflow import new_tenant_key, stream_events, subscribe
from tests.support import eventually
from tests.support.paths import REPO_ROOT, comfyui_ref
from tests.support.real_comfyui import (
    CHECKPOINT_NAME,
    CHECKPOINT_SHA256,
    COMFYUI_VERSION,
    RealComfyUI,
    comfyui_copy,
)

ENVIRONMENT = "sd15"
TEST_NODES = REPO_ROOT / "tests" / "data" / "custom_nodes" / "comfyfleet_test_nodes"
# Our custom nodes: solid magenta, inverted, is green.
SOLID_INVERTED = {
    "1": {"class_type": "ComfyfleetSolid", "inputs": {"width": 8, "height": 4, "color": 0xFF00FF}},
    "2": {"class_type": "ComfyfleetInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
}
REGISTERED_NAME = "registered-sd15.safetensors"
TERMINAL = {
    executions_pb2.EXECUTION_STATE_SUCCEEDED,
    executions_pb2.EXECUTION_STATE_FAILED,
    executions_pb2.EXECUTION_STATE_CANCELLED,
}


@pytest.fixture(scope="module")
def environment_spec(real_comfyui: RealComfyUI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The environment as an operator declares it: our test custom node package, and the
    checkpoint baked in."""
    spec = tmp_path_factory.mktemp("spec") / f"{ENVIRONMENT}.json"
    doc = {
        "name": ENVIRONMENT,
        "engine": "comfyui",
        "comfyui_version": COMFYUI_VERSION,
        "custom_nodes": [{"name": "comfyfleet_test_nodes", "source": str(TEST_NODES)}],
        "models": [
            {
                "folder": "checkpoints",
                "name": CHECKPOINT_NAME,
                "path": str(real_comfyui.checkpoint),
                "sha256": CHECKPOINT_SHA256,
            }
        ],
    }
    spec.write_text(json.dumps(doc))
    return spec


@pytest.fixture(scope="module")
def comfyui_install(
    real_comfyui: RealComfyUI, environment_spec: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A ComfyUI of the environment's own, made by the install step an image build runs."""
    copy = comfyui_copy(real_comfyui, tmp_path_factory.mktemp("comfyui-env"))
    argv = [sys.executable, "-m", "services.executor.comfyui.install"]
    argv += ["--spec", str(environment_spec), "--comfyui-dir", str(copy.source_dir)]
    argv += ["--python", str(copy.python)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return copy.install_dir


@pytest.fixture(scope="module")
def platform_comfyui(comfyui_install: Path, environment_spec: Path) -> ComfyUIExecutor:
    return ComfyUIExecutor(comfyui_install, environment=ENVIRONMENT, spec_file=environment_spec)


@pytest.fixture(scope="module")
async def key(platform: Platform) -> str:
    secret = await new_tenant_key(platform, "studio")
    await eventually(lambda: _catalog_known(platform, secret), timeout=120)
    return secret


async def _catalog_known(platform: Platform, key: str) -> None:
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = environments_pb2_grpc.EnvironmentServiceStub(channel)
        try:
            env = await stub.GetEnvironment(
                environments_pb2.GetEnvironmentRequest(name=ENVIRONMENT),
                metadata=(("authorization", f"Bearer {key}"),),
            )
        except grpc.aio.AioRpcError as err:
            # Declared by its executor when it registers, after ComfyUI answered.
            raise AssertionError(f"{ENVIRONMENT} not there yet: {err.details()}") from err
    assert env.catalog_state == environments_pb2.CATALOG_STATE_KNOWN
    assert env.executor_count >= 1


@pytest.fixture
async def client(platform: Platform, key: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(Settings(platform.addrs.gateway, key)) as sdk:
        yield sdk


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return bytes(response.read())


def pixels_sha256(data: bytes) -> str:
    image = Image.open(io.BytesIO(data))
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def with_inputs(workflow: str, node: str, **inputs: Any) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(workflow)
    graph[node]["inputs"].update(inputs)
    return graph


async def assert_equals_reference(
    execution: executions_pb2.Execution, real: RealComfyUI, name: str
) -> None:
    """The reference's pixels: the same raw-pixel sha256, or, where this machine's CPU
    kernels round a float's last bit otherwise than the machine that made the reference,
    no value more than 1/255 off and at most 1% of values off at all."""
    assert execution.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, execution.error
    expected = sorted(real.reference_result(name)["files"], key=lambda f: f["file"])
    outputs = sorted(execution.outputs, key=lambda o: o.filename)
    assert [o.node_id for o in outputs] == [f["node"] for f in expected]
    for output, reference in zip(outputs, expected, strict=True):
        data = await asyncio.to_thread(fetch, output.url)
        if pixels_sha256(data) != reference["pixels_sha256"]:
            got = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
            ref = Image.open(real.reference_dir(name) / reference["file"]).convert("RGB")
            diff = np.abs(got - np.asarray(ref, dtype=np.int16))
            assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 100, (
                f"{output.filename}: pixels differ from {reference['file']} "
                f"(max {diff.max()}, {np.count_nonzero(diff)} of {diff.size} values)"
            )


@pytest.mark.parametrize("name", ["t01_txt2img", "t02_img2img", "t03_batch_ancestral"])
async def test_diffusion_workflows_with_the_carried_checkpoint_equal_the_references(
    client: AsyncClient, real_comfyui: RealComfyUI, name: str
) -> None:
    inputs = {}
    if name == "t02_img2img":
        inputs["shapes.png"] = (comfyui_ref() / "inputs" / "shapes.png").read_bytes()
    execution = await client.submit(real_comfyui.workflow(name), inputs, environment=ENVIRONMENT)
    assert execution.environment == ENVIRONMENT
    done = await client.wait(execution.id)
    await assert_equals_reference(done, real_comfyui, name)
    assert done.provider == "local"


async def test_a_registered_checkpoint_runs_through_rest_and_equals_the_reference(
    platform: Platform, client: AsyncClient, key: str, real_comfyui: RealComfyUI
) -> None:
    await client.upload_model(real_comfyui.checkpoint, "checkpoint", name=REGISTERED_NAME)
    workflow = with_inputs(real_comfyui.workflow("t01_txt2img"), "4", ckpt_name=REGISTERED_NAME)
    body = {"workflow": workflow, "environment": ENVIRONMENT}
    auth = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession(platform.rest_url, headers=auth) as http,
        http.post("/v1/executions", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        created = await response.json()
    done = await client.wait(created["id"])
    await assert_equals_reference(done, real_comfyui, "t01_txt2img")


async def test_an_unknown_checkpoint_is_refused_naming_the_node(
    client: AsyncClient, real_comfyui: RealComfyUI
) -> None:
    workflow = with_inputs(real_comfyui.workflow("t01_txt2img"), "4", ckpt_name="nope.safetensors")
    with pytest.raises(ApiError) as caught:
        await client.submit(workflow, environment=ENVIRONMENT)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "ckpt_name" in str(caught.value)


async def test_the_same_graph_on_native_is_refused_with_node_errors(
    client: AsyncClient, real_comfyui: RealComfyUI
) -> None:
    with pytest.raises(ApiError) as caught:
        await client.submit(real_comfyui.workflow("t01_txt2img"), environment="native")
    assert caught.value.code == "INVALID_ARGUMENT"
    # As ComfyUI answers a graph with node types it lacks: the first one, by its node id.
    assert "node CheckpointLoaderSimple does not exist" in str(caught.value)
    assert 'workflow["4"]' in str(caught.value)


async def test_sampler_steps_reach_watch_sse_and_webhooks(
    platform: Platform, client: AsyncClient, key: str, real_comfyui: RealComfyUI
) -> None:
    workflow = with_inputs(real_comfyui.workflow("t01_txt2img"), "3", seed=1234)
    with webhook_receiver() as receiver:
        await subscribe(platform, key, receiver.url)
        execution = await client.submit(workflow, environment=ENVIRONMENT)
        watched = [e async for e in client.watch(execution.id)]
        steps = [e.progress.value for e in watched if e.progress.class_type == "KSampler"]
        assert set(range(1, 13)) <= set(steps), steps
        auth = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        async with (
            aiohttp.ClientSession(platform.rest_url, headers=auth) as http,
            http.get(f"/v1/executions/{execution.id}:watch") as response,
        ):
            text = await response.text()
        assert text.count('"KSampler"') >= 12
        ids = {e.event_id for e in watched}

        async def all_delivered() -> None:
            got = {json.loads(r.body)["data"]["eventId"] for r in receiver.requests}
            assert ids <= got

        await eventually(all_delivered, timeout=60)


async def test_cancel_during_sampling_ends_within_a_second_and_the_next_job_runs(
    client: AsyncClient, real_comfyui: RealComfyUI
) -> None:
    long = with_inputs(real_comfyui.workflow("t01_txt2img"), "3", steps=400, seed=99)
    execution = await client.submit(long, environment=ENVIRONMENT)
    async for event in client.watch(execution.id):
        if event.progress.class_type == "KSampler" and event.progress.value >= 2:
            break
    asked = time.monotonic()
    await client.cancel(execution.id)
    async for event in client.watch(execution.id):
        if event.status in TERMINAL:
            break
    took = time.monotonic() - asked
    done = await client.get(execution.id)
    assert done.state == executions_pb2.EXECUTION_STATE_CANCELLED
    assert took <= 1.0, f"cancelled after {took:.2f}s"
    after = await client.wait(
        (await client.submit(real_comfyui.workflow("t01_txt2img"), environment=ENVIRONMENT)).id
    )
    await assert_equals_reference(after, real_comfyui, "t01_txt2img")


def _comfyui_pids(install: Path) -> list[int]:
    """The ComfyUI processes started from ``install`` (the executor's child)."""
    main = str(install / "ComfyUI" / "main.py")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if main.encode() in argv:
            pids.append(int(entry.name))
    return pids


async def test_kill_9_of_comfyui_mid_run_is_retried_and_succeeds_once(
    platform: Platform, client: AsyncClient, real_comfyui: RealComfyUI, comfyui_install: Path
) -> None:
    workflow = with_inputs(real_comfyui.workflow("t01_txt2img"), "3", steps=40, seed=4321)
    execution = await client.submit(workflow, environment=ENVIRONMENT, max_attempts=3)
    async for event in client.watch(execution.id):
        if event.progress.class_type == "KSampler" and event.progress.value >= 2:
            break
    pids = _comfyui_pids(comfyui_install)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    done = await client.wait(execution.id)
    assert done.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, done.error
    assert done.attempt == 2
    events = await stream_events(platform, execution.id)
    terminal = [e.event_type for _, e in events if e.status in TERMINAL]
    assert terminal == ["execution.succeeded"]
    retried = [e for _, e in events if e.event_type == "execution.retrying"]
    assert len(retried) == 1


async def test_the_environments_custom_nodes_are_in_its_catalog_and_run(
    platform: Platform, client: AsyncClient, key: str
) -> None:
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = environments_pb2_grpc.EnvironmentServiceStub(channel)
        auth = (("authorization", f"Bearer {key}"),)
        env = await stub.GetEnvironment(
            environments_pb2.GetEnvironmentRequest(name=ENVIRONMENT), metadata=auth
        )
        catalog = await stub.GetEnvironmentCatalog(
            environments_pb2.GetEnvironmentCatalogRequest(name=ENVIRONMENT), metadata=auth
        )
    assert [n.name for n in env.custom_nodes] == ["comfyfleet_test_nodes"]
    assert [(m.folder, m.name) for m in env.models] == [("checkpoints", CHECKPOINT_NAME)]
    assert {"ComfyfleetSolid", "ComfyfleetInvert"} <= set(catalog.object_info.fields)
    done = await client.wait((await client.submit(SOLID_INVERTED, environment=ENVIRONMENT)).id)
    assert done.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, done.error
    [output] = done.outputs
    image = Image.open(io.BytesIO(await asyncio.to_thread(fetch, output.url))).convert("RGB")
    assert image.size == (8, 4)
    assert np.unique(np.asarray(image).reshape(-1, 3), axis=0).tolist() == [[0, 255, 0]]


async def test_a_custom_node_workflow_on_native_is_refused_with_node_errors(
    client: AsyncClient,
) -> None:
    before = [e.id for e in (await client.list_executions(page_size=100)).executions]
    with pytest.raises(ApiError) as caught:
        await client.submit(SOLID_INVERTED, environment="native")
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "node ComfyfleetSolid does not exist" in str(caught.value)
    assert [e.id for e in (await client.list_executions(page_size=100)).executions] == before
