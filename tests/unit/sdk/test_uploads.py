"""The SDK's side of input uploads without I/O: which files go by presigned PUT, what the
upload declares, how an input names it, and the upload's request_id of an idempotent submit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfyfleet.sdk.requests import (
    Uploaded,
    create_request,
    needs_upload,
    upload_request,
    upload_request_id,
)
from comfyfleet.sdk.settings import DEFAULT_UPLOAD_THRESHOLD_BYTES, Settings


def test_files_over_the_threshold_go_by_upload(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 11)
    assert needs_upload(big, 10) and not needs_upload(big, 11)
    assert needs_upload(b"\0" * 11, 10) and not needs_upload(b"\0" * 10, 10)
    assert not needs_upload("https://example.com/x.png", 0)
    assert not needs_upload(Uploaded("upl_1"), 0)


def test_the_upload_declares_size_sha256_and_media_type(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one read chunk
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    from_file = upload_request(path, "photo.jpg", "r1")
    from_bytes = upload_request(data, "photo.jpg")
    expected = hashlib.sha256(data).hexdigest()
    assert (from_file.size_bytes, from_file.sha256) == (len(data), expected)
    assert (from_file.content_type, from_file.request_id) == ("image/jpeg", "r1")
    assert (from_bytes.size_bytes, from_bytes.sha256) == (len(data), expected)
    assert upload_request(b"x", "noext").content_type == ""


def test_an_input_names_its_upload() -> None:
    request = create_request("{}", {"big.png": Uploaded("upl_1")})
    [item] = request.inputs
    assert item.WhichOneof("source") == "upload_id"
    assert (item.name, item.upload_id, item.content_type) == ("big.png", "upl_1", "image/png")


def test_an_idempotent_submit_derives_one_upload_request_id_per_input() -> None:
    assert upload_request_id("", "a.png") == ""
    first = upload_request_id("sub-1", "a.png")
    assert first == upload_request_id("sub-1", "a.png")
    assert first != upload_request_id("sub-1", "b.png") != upload_request_id("sub-2", "a.png")
    assert len(upload_request_id("r" * 128, "n" * 255)) <= 128


def test_the_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFYFLEET_UPLOAD_THRESHOLD_BYTES", raising=False)
    assert Settings.discover("h:1", "k").upload_threshold_bytes == DEFAULT_UPLOAD_THRESHOLD_BYTES
    monkeypatch.setenv("COMFYFLEET_UPLOAD_THRESHOLD_BYTES", "1024")
    assert Settings.discover("h:1", "k").upload_threshold_bytes == 1024
    assert Settings.discover("h:1", "k", upload_threshold_bytes=5).upload_threshold_bytes == 5
    monkeypatch.setenv("COMFYFLEET_UPLOAD_THRESHOLD_BYTES", "lots")
    with pytest.raises(ValueError, match="COMFYFLEET_UPLOAD_THRESHOLD_BYTES"):
        Settings.discover("h:1", "k")
