"""Large model files in parts through the running platform: the CLI's `models push` above its
threshold, the same methods over REST, and the models:write scope they need."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from safetensors.numpy import save

from comfyfleet.sdk import ApiError, AsyncClient
from comfyfleet.sdk.settings import Settings
from tests.e2e.conftest import Platform
from tests.e2e.test_public_surface import Cli

MIB = 1024 * 1024


def big_model(seed: int) -> bytes:
    """About 12 MiB of valid safetensors: three parts of 5 MiB at most."""
    weights = np.random.default_rng(seed).standard_normal(3 * MIB).astype(np.float32)
    return save({"model.diffusion_model.out.weight": weights}, metadata={"seed": str(seed)})


async def new_key(run: Cli, platform: Platform, tenant: str, *scopes: str) -> str:
    scope_args = [a for s in scopes for a in ("--scope", s)]
    code, out, err = await run(
        platform.admin_key, "keys", "create", "--tenant", tenant, *scope_args
    )
    assert code == 0, err
    return out.strip()


def sha256_in(err: str) -> str:
    found = re.search(r"sha256 ([0-9a-f]{64})", err)
    assert found, err
    return found.group(1)


async def test_cli_pushes_large_files_in_parts(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Cli(platform, capsys)
    key = await new_key(run, platform, "parts-cli", "models:write")
    blob = big_model(1)
    path = tmp_path / "big.safetensors"
    path.write_bytes(blob)

    code, out, err = await run(
        key, "models", "push", str(path), "--type", "checkpoint",
        "--multipart-threshold", "5", "--part-size", "5", "--parallel", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "big.safetensors version 1" in err
    assert sha256_in(err) == hashlib.sha256(blob).hexdigest()
    parts_id = out.strip()

    # The same file streamed (below the default threshold) is the same model content.
    code, out, err = await run(
        key, "models", "push", str(path), "--type", "checkpoint", "--name", "streamed.safetensors"
    )
    assert code == 0, err
    assert sha256_in(err) == hashlib.sha256(blob).hexdigest()
    code, out, _ = await run(key, "models", "list")
    assert parts_id in out and "streamed.safetensors" in out

    # A refused file: the CLI says why and nothing is registered.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04" + bytes(6 * MIB))
    code, _, err = await run(
        key, "models", "push", str(bad), "--type", "lora", "--multipart-threshold", "5"
    )
    assert code != 0 and "INVALID_ARGUMENT" in err and "parts: the file is a Python pickle" in err
    code, out, _ = await run(key, "models", "list")
    assert "bad.safetensors" not in out


async def test_parts_over_rest(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await new_key(Cli(platform, capsys), platform, "parts-rest", "models:write")
    blob = big_model(2)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(platform.rest_url, headers=headers) as http:
        body = {
            "model": {"name": "rest.safetensors", "type": "MODEL_TYPE_LORA"},
            "sizeBytes": str(len(blob)),
            "partSize": str(5 * MIB),
        }
        async with http.post("/v1/models:startUpload", json=body) as response:
            assert response.status == 200, await response.text()
            started = await response.json()
        assert [p["partNumber"] for p in started["parts"]] == [1, 2, 3]
        parts = []
        async with aiohttp.ClientSession() as storage:
            for target in started["parts"]:
                start = (target["partNumber"] - 1) * 5 * MIB
                data = blob[start : start + 5 * MIB]
                put_headers = {"Content-Type": "application/octet-stream"}
                async with storage.put(target["url"], data=data, headers=put_headers) as reply:
                    assert reply.status == 200
                    parts.append(
                        {"partNumber": target["partNumber"], "etag": reply.headers["ETag"]}
                    )

        complete = f"/v1/modelUploads/{started['uploadId']}:complete"
        async with http.post(complete, json={"parts": parts[:2]}) as response:
            assert response.status == 400
            error = await response.json()
            assert error["details"][-1]["fieldViolations"][0]["field"] == "parts"
        async with http.post(complete, json={"parts": parts}) as response:
            assert response.status == 200, await response.text()
            model = await response.json()
        assert model["sha256"] == hashlib.sha256(blob).hexdigest()
        assert model["name"] == "rest.safetensors" and model["version"] == 1

        body["model"]["name"] = "abandoned.safetensors"  # type: ignore[index]
        # Retried with its Idempotency-Key: the same upload; other parameters: refused.
        retry = {"Idempotency-Key": "start-abandoned"}
        async with http.post("/v1/models:startUpload", json=body, headers=retry) as response:
            abandoned = (await response.json())["uploadId"]
        async with http.post("/v1/models:startUpload", json=body, headers=retry) as response:
            assert (await response.json())["uploadId"] == abandoned
        other = {**body, "sizeBytes": str(len(blob) + 1)}
        async with http.post("/v1/models:startUpload", json=other, headers=retry) as response:
            assert response.status == 400
        async with http.post(f"/v1/modelUploads/{abandoned}:abort", json={}) as response:
            assert response.status == 200, await response.text()
        async with http.post(
            f"/v1/modelUploads/{abandoned}:complete", json={"parts": parts}
        ) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 9  # FAILED_PRECONDITION


async def test_multipart_needs_models_write(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await new_key(Cli(platform, capsys), platform, "parts-reader", "executions:write")
    path = tmp_path / "big.safetensors"
    path.write_bytes(big_model(3))
    settings = Settings(address=platform.addrs.gateway, api_key=key)
    async with AsyncClient(settings) as client:
        with pytest.raises(ApiError) as caught:
            await client.upload_model(path, "lora", multipart_threshold=5 * MIB)
        assert caught.value.code == "PERMISSION_DENIED"


async def test_sdk_reports_progress_over_all_parts(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await new_key(Cli(platform, capsys), platform, "parts-sdk", "models:write")
    blob = big_model(4)
    path = tmp_path / "sdk.safetensors"
    path.write_bytes(blob)
    seen: list[tuple[int, int]] = []
    settings = Settings(address=platform.addrs.gateway, api_key=key)
    async with AsyncClient(settings) as client:
        model = await client.upload_model(
            path,
            "vae",
            progress=lambda done, total: seen.append((done, total)),
            multipart_threshold=5 * MIB,
            part_size=5 * MIB,
        )
    assert model.sha256 == hashlib.sha256(blob).hexdigest()
    assert seen[-1] == (len(blob), len(blob))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
