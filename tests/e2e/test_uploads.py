"""Large input files by presigned PUT, the way users send them: the SDK uploads a file over its
threshold and the workflow runs on it; the same over REST; another tenant's upload is as
unknown as none; uploading needs executions:write."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import numpy as np
import pytest
from grpc_status import rpc_status
from PIL import Image

from comfyfleet.cli.main import main as cli
from comfyfleet.common.errors import field_violations
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.sdk import AsyncClient, Settings
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from tests.e2e.conftest import Platform
from tests.support import eventually
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
NAME = "big.png"
WORKFLOW = (REF / "workflows" / "r01_invert.json").read_text().replace("shapes.png", NAME)


@dataclass(frozen=True)
class BigFile:
    path: Path
    data: bytes


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigFile]:
    """A PNG of a few MiB: noise does not compress."""
    pixels = np.random.default_rng(7).integers(0, 256, (1100, 1100, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("uploads") / NAME
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    assert len(data) > 3 << 20
    yield BigFile(path, data)


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return bytes(response.read())


async def new_key(platform: Platform, tenant_name: str, *scopes: str) -> tuple[str, str]:
    """(tenant id, key secret) of a new key of the tenant, made when missing."""
    admin = (("authorization", f"Bearer {platform.admin_key}"),)
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = tenants_pb2_grpc.TenantServiceStub(channel)
        found = await stub.ListTenants(tenants_pb2.ListTenantsRequest(), metadata=admin)
        tenant = next((t for t in found.tenants if t.name == tenant_name), None)
        if tenant is None:
            tenant = await stub.CreateTenant(
                tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=tenant_name)),
                metadata=admin,
            )
        key = tenants_pb2.ApiKey(scopes=list(scopes))
        created = await stub.CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id, api_key=key), metadata=admin
        )
        return tenant.id, created.secret


async def staged_uploads(platform: Platform, tenant: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(platform.env["COMFYFLEET_DATABASE_URL"])
    try:
        return await conn.fetch(
            "SELECT id, size_bytes FROM scheduler.input_uploads WHERE tenant = $1", tenant
        )
    finally:
        await conn.close()


async def test_the_sdk_uploads_a_large_input_and_the_workflow_runs_on_it(
    platform: Platform, big_png: BigFile
) -> None:
    tenant, key = await new_key(platform, "uploads-sdk")
    settings = Settings(platform.addrs.gateway, key, upload_threshold_bytes=1 << 20)
    async with AsyncClient(settings) as client:
        made = await client.submit(WORKFLOW, {NAME: big_png.path}, request_id="big-1")
        # A retried submit finds the same upload, so it is the same request.
        again = await client.submit(WORKFLOW, {NAME: big_png.path}, request_id="big-1")
        assert again.id == made.id
        done = await client.wait(made.id)
    assert done.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, done.error
    [output] = done.outputs
    # Inverted in floats and saved as ComfyUI saves (truncating): off by at most one.
    difference = rgb(fetch(output.url)) - (255 - rgb(big_png.data))
    assert difference.min() >= -1 and difference.max() <= 0
    staged = await staged_uploads(platform, tenant)
    assert [r["size_bytes"] for r in staged] == [len(big_png.data)]


async def test_the_cli_uploads_a_file_over_the_threshold(
    platform: Platform,
    big_png: BigFile,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenant, key = await new_key(platform, "uploads-cli")
    workflow = tmp_path / "wf.json"
    workflow.write_text(WORKFLOW)
    monkeypatch.setenv("COMFYFLEET_UPLOAD_THRESHOLD_BYTES", str(1 << 20))
    argv = ["--addr", platform.addrs.gateway, "--api-key", key, "submit", str(workflow)]
    argv += ["--input", f"{NAME}={big_png.path}", "--wait", "--out", str(tmp_path / "out")]
    code = await asyncio.to_thread(cli, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    [saved] = out.split()
    assert rgb(await asyncio.to_thread(Path(saved).read_bytes)).shape == (1100, 1100, 3)
    staged = await staged_uploads(platform, tenant)
    assert [r["size_bytes"] for r in staged] == [len(big_png.data)]


async def test_upload_and_run_over_rest(platform: Platform, big_png: BigFile) -> None:
    _, key = await new_key(platform, "uploads-rest")
    body = big_png.data
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(platform.rest_url, headers=headers) as http:
        async with http.post(
            "/v1/uploads", json={"name": NAME, "sizeBytes": str(len(body))}
        ) as response:
            assert response.status == 200, await response.text()
            upload = await response.json()
        assert upload["contentType"] == "image/png" and upload["id"].startswith("upl_")
        async with (
            aiohttp.ClientSession() as storage,
            storage.put(upload["uploadUrl"], data=body, headers=upload["uploadHeaders"]) as put,
        ):
            assert put.status == 200, await put.text()
        submit = {"workflowJson": WORKFLOW, "inputs": [{"name": NAME, "uploadId": upload["id"]}]}
        async with http.post("/v1/executions", json=submit) as response:
            assert response.status == 200, await response.text()
            execution_id = (await response.json())["id"]

        async def succeeded() -> dict[str, Any]:
            async with http.get(f"/v1/executions/{execution_id}") as got:
                doc: dict[str, Any] = await got.json()
            assert doc["state"] == "EXECUTION_STATE_SUCCEEDED", doc
            return doc

        done = await eventually(succeeded, timeout=90)
        assert done["inputNames"] == [NAME]
        unknown = {"workflowJson": WORKFLOW, "inputs": [{"name": NAME, "uploadId": "upl_x"}]}
        async with http.post("/v1/executions", json=unknown) as response:
            assert response.status == 400
            status = await response.json()
    violations = [
        v for d in status["details"] for v in d.get("fieldViolations", []) if "field" in v
    ]
    assert [(v["field"], v["reason"]) for v in violations] == [
        ("inputs[0].upload_id", "UPLOAD_NOT_FOUND")
    ], json.dumps(status)


async def test_another_tenants_upload_is_as_unknown_as_none(
    platform: Platform, big_png: BigFile
) -> None:
    a = (("authorization", f"Bearer {(await new_key(platform, 'uploads-a'))[1]}"),)
    b = (("authorization", f"Bearer {(await new_key(platform, 'uploads-b'))[1]}"),)
    _, reader = await new_key(platform, "uploads-a", "webhooks:write")
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = executions_pb2_grpc.ExecutionServiceStub(channel)
        declared = executions_pb2.CreateInputUploadRequest(name=NAME, size_bytes=len(big_png.data))
        theirs = await stub.CreateInputUpload(declared, metadata=a)
        await _put(theirs, big_png.data)

        async def refusal(upload_id: str) -> list[tuple[str, str]]:
            request = executions_pb2.CreateExecutionRequest(
                workflow_json=WORKFLOW,
                inputs=[executions_pb2.InputFile(name=NAME, upload_id=upload_id)],
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateExecution(request, metadata=b)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
            assert status is not None
            return [(v.field, v.reason) for v in field_violations(status)]

        assert await refusal(theirs.id) == await refusal("upl_nobodyhasthisupload")
        assert await refusal(theirs.id) == [("inputs[0].upload_id", "UPLOAD_NOT_FOUND")]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateInputUpload(
                declared, metadata=(("authorization", f"Bearer {reader}"),)
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A's upload still serves A.
        mine = await stub.CreateExecution(
            executions_pb2.CreateExecutionRequest(
                workflow_json=WORKFLOW,
                inputs=[executions_pb2.InputFile(name=NAME, upload_id=theirs.id)],
            ),
            metadata=a,
        )
        assert list(mine.input_names) == [NAME]


async def _put(upload: executions_pb2.InputUpload, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as storage,
        storage.put(upload.upload_url, data=body, headers=dict(upload.upload_headers)) as put,
    ):
        assert put.status == 200, await put.text()
