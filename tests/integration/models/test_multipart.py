"""Multipart uploads: parts PUT straight to object storage, then the streamed upload's checks."""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import AsyncIterator, Callable

import asyncpg
import grpc
import pytest
from minio.datatypes import Part
from minio.error import InvalidResponseError, S3Error
from urllib3.exceptions import MaxRetryError

from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.models.v1 import models_pb2
from services.models.config import MIB
from tests.integration.models.conftest import (
    ModelsService,
    download,
    model_file,
    put_part,
    put_parts,
    rpc_error,
    sha256,
)
from tests.support.eventually import eventually

# About 12 MiB: three parts of 5, 5 and 2 MiB.
BIG = model_file(7, elements=3 * 1024 * 1024)


async def upload_state(models: ModelsService, upload_id: str) -> str:
    conn = await asyncpg.connect(models.database_url)
    try:
        return str(await conn.fetchval("SELECT state FROM models.uploads WHERE id = $1", upload_id))
    finally:
        await conn.close()


async def test_multipart_upload_equals_a_streamed_upload(models: ModelsService) -> None:
    streamed = await models.upload("t1", BIG, name="streamed.safetensors")
    started = await models.start_upload("t1", len(BIG), "parts.safetensors")
    assert started.part_size == 5 * MIB
    assert [p.part_number for p in started.parts] == [1, 2, 3]
    parts = await put_parts(started, BIG)
    model = await models.complete_upload("t1", started.upload_id, parts)

    assert (model.name, model.version, model.tenant) == ("parts.safetensors", 1, "t1")
    assert model.sha256 == streamed.sha256 == sha256(BIG)
    assert model.size_bytes == streamed.size_bytes == len(BIG)
    assert model.format == streamed.format == "safetensors"
    assert model.metadata == streamed.metadata
    assert model.metadata["file_metadata"]["seed"] == "7"
    # One stored file for both names, and the assembled parts are gone.
    assert await models.object_keys() == [f"tenants/t1/models/{sha256(BIG)}"]
    assert await upload_state(models, started.upload_id) == "completed"

    # A retried completion answers with the same model.
    again = await models.complete_upload("t1", started.upload_id, parts)
    assert again == model
    workflow = '{"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "parts.safetensors"}}}'
    resolved = await models.stub.ResolveModels(
        models_pb2.ResolveModelsRequest(workflow_json=workflow), metadata=tenant_metadata("t1")
    )
    assert await download(resolved.models[0].download_url) == BIG


async def test_a_new_file_gets_its_own_object_and_versions_count_on(models: ModelsService) -> None:
    first = await models.multipart_upload("t1", BIG)
    small = model_file(8)
    second = await models.multipart_upload("t1", small)
    assert (first.version, second.version) == (1, 2)
    assert await models.object_keys() == sorted(
        f"tenants/t1/models/{sha256(b)}" for b in (BIG, small)
    )
    # The same bytes under the same name are the same version, as with streamed uploads.
    assert await models.multipart_upload("t1", small) == second
    assert await models.row_count() == 2


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (
            pickle.dumps({"w": list(range(10))}, protocol=4) + b"\0" * (6 * MIB),
            "PICKLE_FORMAT_REFUSED",
        ),
        (b"PK\x03\x04" + b"\0" * (6 * MIB), "PICKLE_FORMAT_REFUSED"),
        (
            struct.pack("<Q", 40) + b'{"w": {"dtype": "F32", "shape": [1]' + b"\0" * (6 * MIB),
            "INVALID_SAFETENSORS",
        ),
        (BIG[:-10], "INVALID_SAFETENSORS"),
    ],
    ids=["pickle", "torch zip", "corrupt header", "truncated"],
)
async def test_refused_files_leave_nothing_behind(
    models: ModelsService, blob: bytes, reason: str
) -> None:
    started = await models.start_upload("t1", len(blob))
    parts = await put_parts(started, blob)
    code, violations = await rpc_error(models.complete_upload("t1", started.upload_id, parts))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in violations] == [("parts", reason)]
    assert await models.row_count() == 0
    assert await models.object_keys() == []
    assert await upload_state(models, started.upload_id) == "refused"
    code, _ = await rpc_error(models.complete_upload("t1", started.upload_id, parts))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_promised_size_and_sha256_are_checked(models: ModelsService) -> None:
    started = await models.start_upload("t1", len(BIG), sha256="0" * 64)
    parts = await put_parts(started, BIG)
    code, violations = await rpc_error(models.complete_upload("t1", started.upload_id, parts))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in violations] == [("parts", "UPLOAD_SHA256_MISMATCH")]

    small = model_file(3)
    started = await models.start_upload("t1", len(small) + 100)
    parts = await put_parts(started, small)
    code, violations = await rpc_error(models.complete_upload("t1", started.upload_id, parts))
    assert [(v.field, v.reason) for v in violations] == [("parts", "UPLOAD_SIZE_MISMATCH")]
    assert await models.row_count() == 0
    assert await models.object_keys() == []

    started = await models.start_upload("t1", len(BIG), sha256=sha256(BIG).upper())
    model = await models.complete_upload("t1", started.upload_id, await put_parts(started, BIG))
    assert model.sha256 == sha256(BIG)


async def test_wrong_or_missing_parts_are_clear_errors_and_can_be_fixed(
    models: ModelsService,
) -> None:
    started = await models.start_upload("t1", len(BIG))
    parts = await put_parts(started, BIG)
    wrong = [models_pb2.CompletedPart(part_number=1, etag='"' + "0" * 32 + '"'), *parts[1:]]
    code, violations = await rpc_error(models.complete_upload("t1", started.upload_id, wrong))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in violations] == [("parts", "UPLOAD_PARTS_INVALID")]
    assert "InvalidPart" in violations[0].description

    for listed in ([parts[0], parts[2]], [parts[1], parts[0], parts[2]], [*parts, parts[2]], []):
        code, violations = await rpc_error(models.complete_upload("t1", started.upload_id, listed))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in violations] == ["parts"]
        assert "from 1 to 3" in violations[0].description
    no_etag = [parts[0], models_pb2.CompletedPart(part_number=2), parts[2]]
    code, violations = await rpc_error(models.complete_upload("t1", started.upload_id, no_etag))
    assert [v.field for v in violations] == ["parts[1].etag"]
    assert await models.row_count() == 0

    # The upload stayed open: the right list completes it.
    model = await models.complete_upload("t1", started.upload_id, parts)
    assert model.sha256 == sha256(BIG)


async def test_abort_frees_the_parts(models: ModelsService) -> None:
    started = await models.start_upload("t1", len(BIG))
    status, _ = await put_part(started.parts[0].url, BIG[: 5 * MIB])
    assert status == 200
    abort = models_pb2.AbortModelUploadRequest(upload_id=started.upload_id)
    await models.stub.AbortModelUpload(abort, metadata=tenant_metadata("t1"))
    # Object storage no longer takes parts for it, and aborting again is no error.
    status, _ = await put_part(started.parts[1].url, BIG[5 * MIB : 10 * MIB])
    assert status != 200
    await models.stub.AbortModelUpload(abort, metadata=tenant_metadata("t1"))
    code, _ = await rpc_error(models.complete_upload("t1", started.upload_id, []))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await models.object_keys() == []

    done = await models.start_upload("t1", len(BIG))
    await models.complete_upload("t1", done.upload_id, await put_parts(done, BIG))
    code, _ = await rpc_error(
        models.stub.AbortModelUpload(
            models_pb2.AbortModelUploadRequest(upload_id=done.upload_id),
            metadata=tenant_metadata("t1"),
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_another_tenants_upload_is_not_found(models: ModelsService) -> None:
    started = await models.start_upload("t1", len(BIG))
    parts = await put_parts(started, BIG)
    for upload_id in (started.upload_id, "upl_nope", "not an id"):
        code, _ = await rpc_error(models.complete_upload("t2", upload_id, parts))
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = await rpc_error(
            models.stub.AbortModelUpload(
                models_pb2.AbortModelUploadRequest(upload_id=upload_id),
                metadata=tenant_metadata("t2"),
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND
    # Untouched: its owner completes it.
    model = await models.complete_upload("t1", started.upload_id, parts)
    assert model.tenant == "t1"


async def test_bad_start_requests_report_every_field(models: ModelsService) -> None:
    request = models_pb2.StartModelUploadRequest(
        model=models_pb2.Model(name="v1-5.ckpt"),
        size_bytes=0,
        sha256="xyz",
        part_size=MIB,
    )
    code, violations = await rpc_error(
        models.stub.StartModelUpload(request, metadata=tenant_metadata("t1"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in violations} == {
        "model.name",
        "model.type",
        "size_bytes",
        "sha256",
        "part_size",
    }
    assert await models.object_keys() == []

    request.model.CopyFrom(models_pb2.Model(name="ok.safetensors", type=models_pb2.MODEL_TYPE_LORA))
    code, violations = await rpc_error(
        models.stub.StartModelUpload(request, metadata=tenant_metadata("t1"))
    )
    assert {v.field for v in violations} == {"size_bytes", "sha256", "part_size"}

    request.size_bytes = 33 * MIB  # over the test limit of 32 MiB
    request.sha256 = ""
    request.part_size = 0
    code, violations = await rpc_error(
        models.stub.StartModelUpload(request, metadata=tenant_metadata("t1"))
    )
    assert [(v.field, v.reason) for v in violations] == [("size_bytes", "MODEL_TOO_LARGE")]
    code, _ = await rpc_error(models.stub.StartModelUpload(request))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    conn = await asyncpg.connect(models.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM models.uploads") == 0
    finally:
        await conn.close()


@pytest.fixture
async def quick_expiry(
    start_models: Callable[..., AsyncIterator[ModelsService]],
) -> AsyncIterator[ModelsService]:
    async for service in start_models(
        upload_ttl_s=3.0, upload_sweep_interval_s=0.2, upload_stuck_after_s=1.0
    ):
        yield service


async def test_the_sweep_aborts_expired_uploads(quick_expiry: ModelsService) -> None:
    models = quick_expiry
    started = await models.start_upload("t1", len(BIG))
    parts = await put_parts(started, BIG)
    row = await _row(models, started.upload_id)
    assert await _takes_parts(models, row["storage_key"], _s3_upload_id(row))

    async def expired() -> None:
        assert await upload_state(models, started.upload_id) == "expired"

    await eventually(expired, timeout=10)
    code, _ = await rpc_error(models.complete_upload("t1", started.upload_id, parts))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await models.row_count() == 0
    # The parts are gone from object storage with it.
    assert not await _takes_parts(models, row["storage_key"], _s3_upload_id(row))


async def test_the_sweep_cleans_up_after_a_completion_that_died(
    quick_expiry: ModelsService,
) -> None:
    """A completion whose process died after object storage assembled the file."""
    models = quick_expiry
    started = await models.start_upload("t1", len(BIG))
    parts = await put_parts(started, BIG)
    row = await _row(models, started.upload_id)
    key = f"tenants/t1/uploads/{started.upload_id}"
    await asyncio.to_thread(
        models.s3.client()._complete_multipart_upload,
        models.bucket,
        key,
        _s3_upload_id(row),
        [Part(p.part_number, p.etag) for p in parts],
    )
    conn = await asyncpg.connect(models.database_url)
    try:
        await conn.execute(
            "UPDATE models.uploads SET state = 'completing', expire_time = now() + interval '1 h'"
            " WHERE id = $1",
            started.upload_id,
        )
    finally:
        await conn.close()
    assert await models.object_keys() == [key]

    async def cleaned() -> None:
        assert await upload_state(models, started.upload_id) == "expired"
        assert await models.object_keys() == []

    await eventually(cleaned, timeout=10)


async def _row(models: ModelsService, upload_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(models.database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM models.uploads WHERE id = $1", upload_id)
        assert row is not None
        return row
    finally:
        await conn.close()


def _s3_upload_id(row: asyncpg.Record) -> str:
    return str(row["s3_upload_id"])


async def _takes_parts(models: ModelsService, key: str, s3_upload_id: str) -> bool:
    """Whether object storage still accepts parts for the multipart upload."""
    client = models.s3.client()
    try:
        await asyncio.to_thread(
            client._upload_part, models.bucket, key, b"x", None, s3_upload_id, 1
        )
    except (S3Error, InvalidResponseError, MaxRetryError):
        # S3 and s3rver answer NoSuchUpload; moto a 500 error.
        return False
    return True


async def test_a_retried_start_with_its_request_id_gets_the_same_upload(
    models: ModelsService,
) -> None:
    first = await models.start_upload("t1", len(BIG), "again.safetensors", request_id="r-1")
    again = await models.start_upload("t1", len(BIG), "again.safetensors", request_id="r-1")
    assert again.upload_id == first.upload_id
    assert [p.part_number for p in again.parts] == [1, 2, 3]
    # Racing retries open one upload between them.
    raced = await asyncio.gather(
        *(
            models.start_upload("t1", len(BIG), "raced.safetensors", request_id="r-2")
            for _ in range(4)
        )
    )
    assert len({r.upload_id for r in raced}) == 1
    # Another tenant's key is its own; the same key for another file is refused.
    other = await models.start_upload("t2", len(BIG), "again.safetensors", request_id="r-1")
    assert other.upload_id != first.upload_id
    code, violations = await rpc_error(
        models.start_upload("t1", len(BIG), "different.safetensors", request_id="r-1")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations] == ["request_id"]
    # Parts PUT through the retried answer's URLs complete the first upload.
    model = await models.complete_upload("t1", first.upload_id, await put_parts(again, BIG))
    assert model.sha256 == sha256(BIG)
