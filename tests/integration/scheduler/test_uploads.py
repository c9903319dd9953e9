"""Input uploads: a presigned PUT straight to S3, named by executions, checked at submit time,
and swept when they expire."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info, field_violations
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.config import Config
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import create
from tests.support.eventually import eventually
from tests.support.infra import S3Info

TENANT = "acme"
BIG = os.urandom(3 << 20)  # a few MiB: more than one chunk of every stream on the way


async def new_upload(clients: Clients, tenant: str = TENANT, **fields: Any) -> Any:
    fields.setdefault("name", "cat.png")
    fields.setdefault("size_bytes", len(BIG))
    return await clients.executions.CreateInputUpload(
        executions_pb2.CreateInputUploadRequest(**fields), metadata=clients.as_tenant(tenant)
    )


async def put(upload: executions_pb2.InputUpload, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(upload.upload_url, data=body, headers=dict(upload.upload_headers)) as response,
    ):
        assert response.status == 200, await response.text()


async def sql(cfg: Config, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(cfg.database.url)
    try:
        await conn.execute(f"SET search_path TO {cfg.schema}")
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def uploaded(name: str, upload_id: str, **fields: Any) -> executions_pb2.InputFile:
    return executions_pb2.InputFile(name=name, upload_id=upload_id, **fields)


async def refused(call: Any) -> tuple[str, dict[str, str]]:
    """The refusal's ErrorInfo reason and its violations, field -> reason."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_info(status)
    assert info is not None
    return info.reason, {v.field: v.reason or v.description for v in field_violations(status)}


async def test_an_uploaded_file_becomes_each_executions_own_input(
    clients: Clients, scheduler_config: Config, s3_server: S3Info
) -> None:
    digest = hashlib.sha256(BIG).hexdigest()
    upload = await new_upload(clients, sha256=digest.upper())
    assert upload.id.startswith("upl_")
    assert (upload.size_bytes, upload.sha256, upload.content_type) == (
        len(BIG),
        digest,
        "image/png",
    )
    assert dict(upload.upload_headers) == {"Content-Type": "image/png"}
    assert upload.upload_url_expire_time.ToSeconds() <= upload.expire_time.ToSeconds()
    assert f"/tenants/{TENANT}/uploads/{upload.id}" in upload.upload_url
    await put(upload, BIG)

    first = await create(clients, TENANT, inputs=[uploaded("cat.png", upload.id)])
    second = await create(
        clients, TENANT, inputs=[uploaded("cat.png", upload.id, content_type="image/x-cat")]
    )
    assert list(first.input_names) == list(second.input_names) == ["cat.png"]
    bucket = scheduler_config.s3.bucket
    for execution in (first, second):
        key = f"tenants/{TENANT}/executions/{execution.id}/inputs/cat.png"
        assert s3_server.client().get_object(bucket, key).read() == BIG
    stored = await sql(
        scheduler_config,
        "SELECT execution_id, size_bytes, content_type, sha256 FROM inputs ORDER BY execution_id",
    )
    assert [tuple(r) for r in stored] == [
        (first.id, len(BIG), "image/png", digest),
        (second.id, len(BIG), "image/x-cat", digest),
    ]


async def test_bad_uploads_are_refused_per_input_and_nothing_is_created(
    clients: Clients, scheduler_config: Config, s3_server: S3Info
) -> None:
    theirs = await new_upload(clients, "globex")
    await put(theirs, BIG)
    never_put = await new_upload(clients)
    short = await new_upload(clients)
    await put(short, BIG[:-1])
    wrong_sha = await new_upload(clients, sha256=hashlib.sha256(b"other").hexdigest())
    await put(wrong_sha, BIG)
    expired = await new_upload(clients)
    await put(expired, BIG)
    await sql(
        scheduler_config,
        "UPDATE input_uploads SET expires_at = now() - interval '1 second' WHERE id = $1",
        expired.id,
    )
    good = await new_upload(clients)
    await put(good, BIG)
    inline = executions_pb2.InputFile(name="inline.png", content=b"fine")
    names = [f"{i}.png" for i in range(3)]

    # Unknown, another tenant's and expired uploads are refused before anything is copied.
    reason, found = await refused(
        create(
            clients,
            TENANT,
            inputs=[
                inline,
                uploaded(names[0], "upl_nosuchupload"),
                uploaded(names[1], theirs.id),
                uploaded(names[2], expired.id),
            ],
        )
    )
    assert reason == "INPUT_UPLOAD_INVALID"
    assert found == {
        "inputs[1].upload_id": "UPLOAD_NOT_FOUND",
        "inputs[2].upload_id": "UPLOAD_NOT_FOUND",
        "inputs[3].upload_id": "UPLOAD_EXPIRED",
    }
    # Those that exist are checked against what they declared, after the copy.
    reason, found = await refused(
        create(
            clients,
            TENANT,
            inputs=[
                uploaded(names[0], good.id),
                uploaded(names[1], never_put.id),
                uploaded(names[2], short.id),
                uploaded("3.png", wrong_sha.id),
                inline,
            ],
        )
    )
    assert found == {
        "inputs[1].upload_id": "UPLOAD_EMPTY",
        "inputs[2].upload_id": "UPLOAD_SIZE_MISMATCH",
        "inputs[3].upload_id": "UPLOAD_SHA256_MISMATCH",
    }
    _, found = await refused(create(clients, TENANT, inputs=[uploaded("x.png", "")]))
    assert found == {"inputs[0].upload_id": "must not be empty"}

    for table in ("executions", "inputs", "events"):
        assert await sql(scheduler_config, f"SELECT 1 FROM {table}") == [], table
    bucket = scheduler_config.s3.bucket
    left = {
        o.object_name
        for o in s3_server.client().list_objects(bucket, prefix="tenants/", recursive=True)
    }
    assert not [k for k in left if "/executions/" in k], left


async def test_create_input_upload_checks_its_fields_and_replays_a_request_id(
    clients: Clients, scheduler_config: Config
) -> None:
    reason, found = await refused(
        new_upload(clients, size_bytes=0, sha256="abc", name="a\nb", request_id="r" * 200)
    )
    assert set(found) == {"size_bytes", "sha256", "name", "request_id"}
    _, found = await refused(new_upload(clients, size_bytes=(5 << 30) + 1))
    assert set(found) == {"size_bytes"}
    assert await sql(scheduler_config, "SELECT 1 FROM input_uploads") == []

    first = await new_upload(clients, request_id="u-1", name="model.bin")
    again = await new_upload(clients, request_id="u-1", name="model.bin")
    assert again.id == first.id and again.request_id == "u-1"
    assert first.content_type == "application/octet-stream"
    theirs = await new_upload(clients, "globex", request_id="u-1", name="model.bin")
    assert theirs.id != first.id
    reason, found = await refused(new_upload(clients, request_id="u-1", size_bytes=7))
    assert (reason, found) == ("REQUEST_ID_REUSED", {"request_id": "REUSED"})


async def test_the_sweep_deletes_expired_uploads_and_their_files(
    start_scheduler: StartScheduler, scheduler_config: Config, s3_server: S3Info
) -> None:
    async with (
        start_scheduler(upload_sweep_interval_s=0.1) as running,
        clients_of(running) as clients,
    ):
        kept = await new_upload(clients)
        gone = await new_upload(clients)
        unused = await new_upload(clients)
        await put(kept, BIG)
        await put(gone, BIG)
        used = await create(clients, TENANT, inputs=[uploaded("cat.png", gone.id)])
        await sql(
            scheduler_config,
            "UPDATE input_uploads SET expires_at = now() WHERE id = ANY($1)",
            [gone.id, unused.id],
        )
        bucket = scheduler_config.s3.bucket

        async def swept() -> None:
            rows = await sql(scheduler_config, "SELECT id FROM input_uploads")
            assert [r["id"] for r in rows] == [kept.id]

        await eventually(swept)
        keys = {
            o.object_name
            for o in s3_server.client().list_objects(bucket, prefix="tenants/", recursive=True)
        }
        assert keys == {
            f"tenants/{TENANT}/uploads/{kept.id}",
            f"tenants/{TENANT}/executions/{used.id}/inputs/cat.png",
        }
        # The execution keeps its own copy; the expired upload can no longer be named.
        _, found = await refused(create(clients, TENANT, inputs=[uploaded("c.png", gone.id)]))
        assert found == {"inputs[0].upload_id": "UPLOAD_NOT_FOUND"}
