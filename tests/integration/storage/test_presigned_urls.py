"""Batch-presigned URLs work against a real S3 server that checks signatures (s3rver)."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request

import pytest

from comfyfleet.common.config import S3Config
from comfyfleet.common.storage import ObjectStore
from tests.support import S3Info


def _store(s3_server: S3Info, bucket: str) -> ObjectStore:
    return ObjectStore.from_config(
        S3Config(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            region=s3_server.region,
            bucket=bucket,
        )
    )


def _send(url: str, method: str, data: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


async def test_batch_put_then_get_round_trips(s3_server: S3Info, s3_bucket: str) -> None:
    store = _store(s3_server, s3_bucket)
    keys = [f"tenants/t/executions/e/outputs/attempt-1/slot-{n:03d}" for n in range(4)]
    keys.append("tenants/t/executions/e/inputs/a photo (1)+ü.png")
    for key, url in zip(keys, store.presign_puts(keys, 300), strict=True):
        status, _body, _ = _send(url, "PUT", key.encode())
        assert status == 200, (key, status)
    for key, url in zip(keys, store.presign_gets(keys, 300), strict=True):
        status, body, _ = _send(url, "GET")
        assert (status, body) == (200, key.encode())
    # The single-URL forms go through the same signer.
    status, body, headers = _send(store.presign_get(keys[0], 60, filename="out.png"), "GET")
    assert (status, body) == (200, keys[0].encode())
    assert headers.get("Content-Disposition") == 'attachment; filename="out.png"'
    status, _body, _ = _send(store.presign_put("single", 60), "PUT", b"x")
    assert status == 200
    assert await store.get("single") == b"x"


@pytest.mark.parametrize("tamper", ["signature", "secret", "key"])
def test_a_wrong_signature_is_refused(s3_server: S3Info, s3_bucket: str, tamper: str) -> None:
    """The server checks what the presigner signs: the round trip above means something."""
    store = _store(s3_server, s3_bucket)
    if tamper == "secret":
        store = dataclasses.replace(
            store, cfg=dataclasses.replace(store.cfg, secret_key="not-the-secret")
        )
    [url] = store.presign_puts(["k"], 60)
    if tamper == "signature":
        url = url[:-1] + ("0" if url[-1] != "0" else "1")
    if tamper == "key":
        url = url.replace("/k?", "/other?")
    status, _body, _ = _send(url, "PUT", b"x")
    assert status == 403
