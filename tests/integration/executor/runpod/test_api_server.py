"""The RunPod worker under the SDK's local API server (``--rp_serve_api``), driven over HTTP
as the scheduler drives a RunPod endpoint, with real S3 and the real native engine."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from google.rpc import code_pb2
from PIL import Image

from comfyfleet.common.errors import error_info, field_violations
from comfyfleet.common.storage import ObjectStore
from comfyfleet.devstack import free_port
from comfyfleet.executor.v1 import executor_pb2
from tests.integration.executor.conftest import input_bytes, make_job, workflow_text
from tests.integration.executor.runpod.conftest import (
    START_TIMEOUT_S,
    job_input,
    updates_of,
    worker_env,
    worker_process,
)
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref

NODE = executor_pb2.NODE_STATE_RUNNING, executor_pb2.NODE_STATE_DONE


class Endpoint:
    """The local API server's routes, as RunPod's endpoint API names them."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def post(self, path: str, body: Any = None) -> dict[str, Any]:
        async with self.http.post(self.base + path, json=body) as response:
            assert response.status == 200, await response.text()
            reply: dict[str, Any] = await response.json()
            return reply

    async def run(self, request: executor_pb2.ExecuteRequest) -> str:
        reply = await self.post("/run", {"input": job_input(request)})
        assert reply["status"] == "IN_PROGRESS"
        return str(reply["id"])


@pytest.fixture(scope="module")
async def endpoint(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Endpoint]:
    port = free_port()
    args = ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)]
    work = tmp_path_factory.mktemp("runpod-api")
    env = worker_env(work / "work")
    async with (
        worker_process(env, args, work / "worker.log") as process,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        base = f"http://127.0.0.1:{port}"

        async def serving() -> None:
            assert process.returncode is None, (work / "worker.log").read_text()
            try:
                async with http.get(base + "/docs") as response:
                    assert response.status == 200
            except aiohttp.ClientConnectionError as err:
                raise AssertionError(f"not serving yet: {err}") from None

        await eventually(serving, timeout=START_TIMEOUT_S, interval=0.2)
        yield Endpoint(http, base)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.int16)


def reference_png(name: str, file: str) -> bytes:
    return (comfyui_ref() / "reference" / name / file).read_bytes()


async def test_r01_invert_streams_its_updates_and_uploads_the_reference_image(
    endpoint: Endpoint, store: ObjectStore
) -> None:
    job = await make_job(
        store, workflow_text("r01_invert"), inputs={"shapes.png": input_bytes("shapes.png")}
    )

    job_id = await endpoint.run(job.request)
    reply = await endpoint.post(f"/stream/{job_id}")

    assert reply["status"] == "COMPLETED"
    updates = updates_of([part["output"] for part in reply["stream"]])
    kinds = [u.WhichOneof("update") for u in updates]
    assert kinds[0] == "started" and kinds[-1] == "completed" and set(kinds[1:-1]) == {"node"}
    assert updates[0].started.device == "cpu"
    nodes = [(u.node.state, u.node.progress.node_id) for u in updates if u.node.state in NODE]
    assert [n for _, n in nodes] == ["1", "1", "2", "2", "3", "3"]
    done = updates[-1].completed
    assert [(o.slot, o.output.node_id, o.output.filename) for o in done.outputs] == [
        (0, "3", "r01_00001_.png")
    ]
    uploaded = await store.get(job.output_keys[0])
    assert done.outputs[0].output.sha256 == hashlib.sha256(uploaded).hexdigest()
    reference = reference_png("r01_invert", "node3_images_0.png")
    assert np.abs(pixels(uploaded) - pixels(reference)).max() <= 1


async def test_runsync_and_status_return_the_aggregated_updates(
    endpoint: Endpoint, store: ObjectStore
) -> None:
    inputs = {"shapes.png": input_bytes("shapes.png")}
    first = await make_job(store, workflow_text("r01_invert"), inputs=inputs)
    second = await make_job(store, workflow_text("r01_invert"), inputs=inputs)

    synced = await endpoint.post("/runsync", {"input": job_input(first.request)})
    job_id = await endpoint.run(second.request)
    status = await endpoint.post(f"/status/{job_id}")

    assert (synced["status"], status["status"]) == ("COMPLETED", "COMPLETED")
    fresh, again = updates_of(synced["output"])[-1], updates_of(status["output"])[-1]
    assert fresh.completed.outputs[0].output.sha256 == again.completed.outputs[0].output.sha256
    # The second run is answered from the node cache, its file uploaded to its own slot.
    assert sorted(again.completed.cached_nodes) == ["1", "2", "3"]
    assert await store.get(second.output_keys[0]) == await store.get(first.output_keys[0])


async def test_a_job_without_an_execute_request_fails_with_a_field_violation(
    endpoint: Endpoint,
) -> None:
    reply = await endpoint.post("/runsync", {"input": {"workflow": "{}"}})

    assert reply["status"] == "COMPLETED"
    (update,) = updates_of(reply["output"])
    assert update.failed.error.code == code_pb2.INVALID_ARGUMENT
    assert update.failed.retryable is False
    assert [v.field for v in field_violations(update.failed.error)] == ["input.execute_request"]


async def test_an_invalid_request_is_refused_before_anything_runs(
    endpoint: Endpoint, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"))
    job.request.attempt = 0

    reply = await endpoint.post("/runsync", {"input": job_input(job.request)})

    (update,) = updates_of(reply["output"])
    assert update.failed.error.code == code_pb2.INVALID_ARGUMENT
    assert [v.field for v in field_violations(update.failed.error)] == ["attempt"]


async def test_an_invalid_workflow_fails_for_good_with_per_node_violations(
    endpoint: Endpoint, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("invalid_unknown_class"))

    reply = await endpoint.post("/runsync", {"input": job_input(job.request)})

    failed = updates_of(reply["output"])[-1].failed
    assert failed.retryable is False
    assert failed.error.code == code_pb2.INVALID_ARGUMENT
    info = error_info(failed.error)
    assert info is not None and info.reason == "WORKFLOW_INVALID"
    assert any('"2"' in v.field for v in field_violations(failed.error))
