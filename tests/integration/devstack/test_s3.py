"""The S3 contract the platform relies on, checked against every local S3 backend."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error

from comfyfleet.devstack.s3 import S3_BACKENDS, S3Server, make_s3_server
from tests.support import S3Info, unique_bucket_name


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with make_s3_server("s3rver", data_dir=tmp_path_factory.mktemp("s3rver")) as server:
        yield server


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with make_s3_server("moto", data_dir=tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(params=S3_BACKENDS)
def backend_server(request: pytest.FixtureRequest) -> S3Server:
    """Each backend in turn: the contract holds for both."""
    server: S3Server = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def client_and_bucket(backend_server: S3Server) -> tuple[Minio, str]:
    bucket = unique_bucket_name("contract")
    backend_server.ensure_bucket(bucket)
    return backend_server.client(), bucket


def _put(client: Minio, bucket: str, key: str, data: bytes, **kwargs: object) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data), **kwargs)  # type: ignore[arg-type]


def test_put_get_stat_list_remove(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    _put(
        client,
        bucket,
        "tenant-a/out/1.png",
        b"\x89PNG-one",
        content_type="image/png",
        metadata={"sha256": "abc"},
    )
    _put(client, bucket, "tenant-a/out/2.png", b"two")
    _put(client, bucket, "tenant-b/out/1.png", b"other tenant")

    response = client.get_object(bucket, "tenant-a/out/1.png")
    try:
        assert response.read() == b"\x89PNG-one"
    finally:
        response.close()
        response.release_conn()
    stat = client.stat_object(bucket, "tenant-a/out/1.png")
    assert stat.size == len(b"\x89PNG-one")
    assert stat.content_type == "image/png"
    assert stat.metadata is not None
    assert stat.metadata["x-amz-meta-sha256"] == "abc"

    listed = [
        o.object_name for o in client.list_objects(bucket, prefix="tenant-a/", recursive=True)
    ]
    assert listed == ["tenant-a/out/1.png", "tenant-a/out/2.png"]

    client.remove_object(bucket, "tenant-a/out/2.png")
    with pytest.raises(S3Error) as missing:
        client.stat_object(bucket, "tenant-a/out/2.png")
    assert missing.value.code == "NoSuchKey"


def test_presigned_urls_work_with_plain_http(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    put_url = client.presigned_put_object(bucket, "uploads/a.bin", expires=timedelta(minutes=5))
    request = urllib.request.Request(
        put_url,
        data=b"\x00\x01uploaded",
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200

    get_url = client.presigned_get_object(bucket, "uploads/a.bin", expires=timedelta(minutes=5))
    with urllib.request.urlopen(get_url, timeout=10) as reply:
        assert reply.read() == b"\x00\x01uploaded"


async def test_presigned_urls_work_with_aiohttp(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    put_url = client.presigned_put_object(bucket, "outputs/x.png", expires=timedelta(minutes=5))
    get_url = client.presigned_get_object(bucket, "outputs/x.png", expires=timedelta(minutes=5))
    async with aiohttp.ClientSession() as session:
        async with session.put(put_url, data=b"png-bytes") as reply:
            assert reply.status == 200, await reply.text()
        async with session.get(get_url) as reply:
            assert reply.status == 200
            assert await reply.read() == b"png-bytes"
    assert client.stat_object(bucket, "outputs/x.png").size == len(b"png-bytes")


def test_multipart_upload(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    data = bytes(range(256)) * (11 * 1024 * 4)  # 11 MiB: three parts of at most 5 MiB
    client.put_object(bucket, "models/big.safetensors", io.BytesIO(data), -1, part_size=5 << 20)
    response = client.get_object(bucket, "models/big.safetensors")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()


async def test_keys_with_spaces_and_unicode(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    key = "tenant a/outputs/my image (1)+ü~*.png"
    _put(client, bucket, key, b"odd key")
    assert client.stat_object(bucket, key).size == len(b"odd key")
    url = client.presigned_get_object(bucket, key)
    assert _status(url) == 200
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert reply.status == 200, await reply.text()
    listed = [
        o.object_name for o in client.list_objects(bucket, prefix="tenant a/", recursive=True)
    ]
    assert listed == [key]


def test_unsigned_object_reads_are_refused(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    _put(client, bucket, "private.txt", b"secret")
    url = client.presigned_get_object(bucket, "private.txt").split("?")[0]
    assert _status(url) == 403


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_s3rver_verifies_signatures(s3rver: S3Server) -> None:
    """moto takes any signature; the devstack's s3rver checks them as S3 does."""
    bucket = unique_bucket_name("signed")
    s3rver.ensure_bucket(bucket)
    _put(s3rver.client(), bucket, "a.txt", b"a")
    _put(s3rver.client(), bucket, "b.txt", b"b")
    wrong = Minio(
        s3rver.address,
        access_key="comfyfleet",
        secret_key="not-the-secret",
        region="us-east-1",
        secure=False,
    )
    with pytest.raises(S3Error):
        wrong.stat_object(bucket, "a.txt")

    url = s3rver.client().presigned_get_object(bucket, "a.txt", expires=timedelta(minutes=5))
    assert _status(url) == 200
    assert _status(url.replace("/a.txt?", "/b.txt?")) == 403
    assert _status(url.replace("127.0.0.1", "localhost")) == 403
    expired = s3rver.client().presigned_get_object(
        bucket,
        "a.txt",
        expires=timedelta(seconds=60),
        request_date=datetime.now(UTC) - timedelta(hours=1),
    )
    assert _status(expired) == 403


def test_session_s3_server_has_its_default_bucket(s3_server: S3Info, s3_bucket: str) -> None:
    client = s3_server.client()
    assert client.bucket_exists(s3_server.bucket)
    assert client.bucket_exists(s3_bucket)
    assert s3_bucket != s3_server.bucket
    assert s3_server.endpoint == f"http://{s3_server.host}"
    assert s3_server.region == "us-east-1"


def test_s3rver_keeps_objects_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "s3"
    bucket = "keep"
    with make_s3_server("s3rver", data_dir=data_dir) as server:
        server.ensure_bucket(bucket)
        _put(server.client(), bucket, "k/v.txt", b"persisted")
    with make_s3_server("s3rver", data_dir=data_dir) as server:
        response = server.client().get_object(bucket, "k/v.txt")
        try:
            assert response.read() == b"persisted"
        finally:
            response.close()
            response.release_conn()


def _start_multipart(client: Minio, bucket: str, key: str) -> str:
    return client._create_multipart_upload(
        bucket, key, {"Content-Type": "application/octet-stream"}
    )


def _put_part(
    client: Minio, bucket: str, key: str, upload_id: str, number: int, data: bytes
) -> str:
    """One part through a presigned URL and a plain HTTP PUT, as clients upload parts."""
    url = client.get_presigned_url(
        "PUT",
        bucket,
        key,
        expires=timedelta(minutes=5),
        extra_query_params={"partNumber": str(number), "uploadId": upload_id},
    )
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return str(reply.headers["ETag"])


def _s3_code(call: object) -> str:
    assert callable(call)
    with pytest.raises(S3Error) as caught:
        call()
    return str(caught.value.code)


def test_multipart_upload_through_presigned_part_urls(
    client_and_bucket: tuple[Minio, str],
) -> None:
    client, bucket = client_and_bucket
    data = bytes(range(256)) * (4096 * 11)  # 11 MiB
    pieces = [data[i : i + (5 << 20)] for i in range(0, len(data), 5 << 20)]
    upload_id = _start_multipart(client, bucket, "staging/big")
    etags = [
        _put_part(client, bucket, "staging/big", upload_id, n, p) for n, p in enumerate(pieces, 1)
    ]

    wrong = [Part(1, '"00000000000000000000000000000000"'), *map(Part, [2, 3], etags[1:])]
    assert (
        _s3_code(lambda: client._complete_multipart_upload(bucket, "staging/big", upload_id, wrong))
        == "InvalidPart"
    )
    # A refused completion leaves the upload open, as in S3.
    client._complete_multipart_upload(
        bucket, "staging/big", upload_id, [Part(n, e) for n, e in enumerate(etags, 1)]
    )
    response = client.get_object(bucket, "staging/big")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()


def test_multipart_parts_under_5_mib_are_too_small(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    upload_id = _start_multipart(client, bucket, "staging/small")
    etags = [_put_part(client, bucket, "staging/small", upload_id, n, b"x" * 100) for n in (1, 2)]
    parts = [Part(n, e) for n, e in enumerate(etags, 1)]
    assert (
        _s3_code(
            lambda: client._complete_multipart_upload(bucket, "staging/small", upload_id, parts)
        )
        == "EntityTooSmall"
    )


def test_multipart_upload_abort(client_and_bucket: tuple[Minio, str]) -> None:
    client, bucket = client_and_bucket
    upload_id = _start_multipart(client, bucket, "staging/gone")
    _put_part(client, bucket, "staging/gone", upload_id, 1, b"abc")
    client._abort_multipart_upload(bucket, "staging/gone", upload_id)
    assert (
        _s3_code(lambda: client._abort_multipart_upload(bucket, "staging/gone", upload_id))
        == "NoSuchUpload"
    )
    assert _s3_code(lambda: client.stat_object(bucket, "staging/gone")) in {"NoSuchKey", "NotFound"}
