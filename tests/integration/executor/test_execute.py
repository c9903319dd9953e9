"""Execute against a real executor, real S3 and the real native engine."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import pytest
from google.rpc import code_pb2
from PIL import Image

from comfyfleet.common.errors import error_info, field_violations
from comfyfleet.common.storage import ObjectStore
from comfyfleet.executor.v1 import executor_pb2
from tests.integration.executor.conftest import (
    ExecutorUnderTest,
    collect,
    input_bytes,
    make_job,
    workflow_text,
)
from tests.support.paths import comfyui_ref

RUNNING = executor_pb2.NODE_STATE_RUNNING
DONE = executor_pb2.NODE_STATE_DONE
CACHED = executor_pb2.NODE_STATE_CACHED


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.int16)


def nodes_of(updates: list[executor_pb2.ExecuteUpdate]) -> list[executor_pb2.NodeUpdate]:
    return [u.node for u in updates if u.WhichOneof("update") == "node"]


async def test_r01_invert_uploads_the_reference_image(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(
        store, workflow_text("r01_invert"), inputs={"shapes.png": input_bytes("shapes.png")}
    )

    updates = await collect(executor.stub, job.request)

    assert updates[0].started.executor_id == executor.running.identity.executor_id
    assert updates[0].started.device == "cpu"
    assert updates[-1].WhichOneof("update") == "completed", updates[-1]
    done = updates[-1].completed
    assert len(done.outputs) == 1
    out = done.outputs[0]
    assert (out.slot, out.output.node_id, out.output.kind) == (0, "3", "images")
    assert (out.output.filename, out.output.subfolder) == ("r01_00001_.png", "")
    assert out.output.content_type == "image/png"
    uploaded = await store.get(job.output_keys[0])
    assert out.output.size_bytes == len(uploaded)
    assert out.output.sha256 == hashlib.sha256(uploaded).hexdigest()
    reference = (comfyui_ref() / "reference" / "r01_invert" / "node3_images_0.png").read_bytes()
    assert np.abs(pixels(uploaded) - pixels(reference)).max() <= 1
    assert done.metrics.execution_time_seconds > 0
    assert done.metrics.memory_used_bytes >= 0
    assert list(done.cached_nodes) == []


async def test_progress_updates_arrive_in_order(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"))

    nodes = nodes_of(await collect(executor.stub, job.request))

    assert [(n.state, n.progress.node_id) for n in nodes if n.state in (RUNNING, DONE)] == [
        (RUNNING, "1"),
        (DONE, "1"),
        (RUNNING, "2"),
        (DONE, "2"),
        (RUNNING, "3"),
        (DONE, "3"),
    ]
    assert {n.progress.nodes_total for n in nodes} == {3}
    done_counts = [n.progress.nodes_done for n in nodes]
    assert done_counts == sorted(done_counts) and done_counts[-1] == 3
    classes = {n.progress.node_id: n.progress.class_type for n in nodes}
    assert classes == {"1": "EmptyImage", "2": "ImageInvert", "3": "SaveImage"}
    assert all(n.seconds >= 0 for n in nodes if n.state == DONE)


async def test_identical_resubmission_is_answered_from_cache(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    inputs = {"shapes.png": input_bytes("shapes.png")}
    first = await make_job(store, workflow_text("r01_invert"), inputs=inputs)
    second = await make_job(store, workflow_text("r01_invert"), inputs=inputs)

    fresh = await collect(executor.stub, first.request)
    again = await collect(executor.stub, second.request)

    assert {n.state for n in nodes_of(again)} == {CACHED}
    assert sorted(again[-1].completed.cached_nodes) == ["1", "2", "3"]
    assert nodes_of(again)[-1].progress.nodes_done == 3
    # The cached output node's file is uploaded again, to this attempt's own slot.
    assert await store.get(second.output_keys[0]) == await store.get(first.output_keys[0])
    assert (
        again[-1].completed.outputs[0].output.sha256 == fresh[-1].completed.outputs[0].output.sha256
    )


async def test_a_node_that_raises_fails_the_attempt_for_good(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(
        store, workflow_text("r01_invert"), inputs={"shapes.png": b"this is not a png"}
    )

    updates = await collect(executor.stub, job.request)

    failed = updates[-1].failed
    assert updates[-1].WhichOneof("update") == "failed"
    assert failed.retryable is False
    assert failed.error.code == code_pb2.FAILED_PRECONDITION
    info = error_info(failed.error)
    assert info is not None and info.reason == "NODE_EXECUTION_FAILED"
    assert info.metadata["node_id"] == "1"
    assert info.metadata["node_type"] == "LoadImage"
    assert info.metadata["exception_type"]
    assert info.metadata["exception_message"]


async def test_an_invalid_workflow_fails_for_good_with_field_violations(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("invalid_unknown_class"))

    updates = await collect(executor.stub, job.request)

    failed = updates[-1].failed
    assert failed.retryable is False
    assert failed.error.code == code_pb2.INVALID_ARGUMENT
    assert field_violations(failed.error)


INVALID = ["invalid_unknown_class", "invalid_missing_link", "invalid_multi_validation"]


@pytest.mark.parametrize("name", INVALID)
async def test_a_refusal_carries_comfyuis_answer_for_rest_clients(
    executor: ExecutorUnderTest, store: ObjectStore, name: str
) -> None:
    expected = json.loads((comfyui_ref() / "invalid_responses.json").read_text())
    answer = expected[f"{name}.json"]["body"]
    job = await make_job(store, workflow_text(name))

    updates = await collect(executor.stub, job.request)

    failed = updates[-1].failed
    assert failed.error.code == code_pb2.INVALID_ARGUMENT
    info = error_info(failed.error)
    assert info is not None and info.reason == "WORKFLOW_INVALID"
    assert json.loads(info.metadata["comfyui_error"]) == answer["error"]
    node_errors = json.loads(info.metadata["comfyui_node_errors"])
    assert without_traceback(node_errors) == without_traceback(answer["node_errors"])


def without_traceback(body: Any) -> Any:
    """ComfyUI's tracebacks point into its own source; they are not compared."""
    if isinstance(body, dict):
        return {k: without_traceback(v) for k, v in body.items() if k != "traceback"}
    if isinstance(body, list):
        return [without_traceback(v) for v in body]
    return body


async def test_more_outputs_than_slots_fails_for_good(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    job = await make_job(store, json.dumps(workflow), slots=2)

    updates = await collect(executor.stub, job.request)

    failed = updates[-1].failed
    assert failed.retryable is False
    info = error_info(failed.error)
    assert info is not None and info.reason == "OUTPUT_SLOTS_EXHAUSTED"
    assert await store.size(job.output_keys[0]) is None


async def test_a_failing_upload_url_is_a_retryable_failure(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"), slots=1)
    missing = ObjectStore(
        store.cfg.__class__(**{**store.cfg.__dict__, "bucket": "no-such-bucket-here"}),
        store.client,
    )
    job.request.output_slots[0].url = missing.presign_put("slot-000", 60)

    updates = await collect(executor.stub, job.request)

    failed = updates[-1].failed
    assert updates[-1].WhichOneof("update") == "failed"
    assert failed.retryable is True
    assert failed.error.code == code_pb2.UNAVAILABLE
    info = error_info(failed.error)
    assert info is not None and info.reason == "OUTPUT_UPLOAD_FAILED"
    assert "X-Amz-Signature" not in failed.error.message


async def test_a_failing_input_url_is_a_retryable_failure(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("r01_invert"))
    url = store.presign_get("tenants/nobody/missing.png", 60)
    job.request.inputs.append(executor_pb2.InputRef(name="shapes.png", url=url, size_bytes=1))

    updates = await collect(executor.stub, job.request)

    failed = updates[-1].failed
    assert failed.retryable is True
    info = error_info(failed.error)
    assert info is not None and info.reason == "INPUT_DOWNLOAD_FAILED"
    assert [u.WhichOneof("update") for u in updates] == ["started", "failed"]


async def test_runtime_error_workflow_names_the_failing_node(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("runtime_error"))

    updates = await collect(executor.stub, job.request)

    failed = updates[-1].failed
    assert updates[-1].WhichOneof("update") == "failed"
    assert failed.retryable is False
    info = error_info(failed.error)
    assert info is not None
    assert (info.metadata["node_id"], info.metadata["node_type"]) == ("3", "LatentConcat")
    assert info.metadata["exception_type"] == "RuntimeError"
    assert "Sizes of tensors must match" in info.metadata["exception_message"]
    done = [n.progress.node_id for n in nodes_of(updates) if n.state == DONE]
    assert sorted(done) == ["1", "2"]


async def test_a_latent_output_keeps_its_subfolder_and_kind(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("r08_latent"))

    updates = await collect(executor.stub, job.request)

    out = updates[-1].completed.outputs[0].output
    assert (out.node_id, out.kind, out.subfolder) == ("4", "latents", "latents")
    assert out.filename.endswith(".latent")
    reference = comfyui_ref() / "reference" / "r08_latent" / "node4_latents_0.latent"
    assert out.size_bytes == reference.stat().st_size
    assert await store.size(job.output_keys[0]) == out.size_bytes
