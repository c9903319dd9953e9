"""Input uploads without I/O: the upload request's checks, an input naming an upload, the
fingerprint of a request that names one, and the settings."""

from __future__ import annotations

import json

import pytest

from comfyfleet.common.config import ConfigError
from comfyfleet.common.errors import InvalidArgument
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.config import SchedulerSettings
from services.scheduler.requests import parse_create_request
from services.scheduler.uploads import parse_upload_request, upload_key

SETTINGS = SchedulerSettings(upload_max_bytes=1000)
GRAPH = json.dumps({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}})


def upload(**fields: object) -> executions_pb2.CreateInputUploadRequest:
    fields.setdefault("size_bytes", 10)
    return executions_pb2.CreateInputUploadRequest(**fields)  # type: ignore[arg-type]


def test_an_upload_takes_its_media_type_from_its_name_and_a_lowercase_sha256() -> None:
    new = parse_upload_request(upload(name="a.png", sha256="AB" * 32), SETTINGS)
    assert (new.content_type, new.sha256, new.request_id) == ("image/png", "ab" * 32, None)
    plain = parse_upload_request(upload(), SETTINGS)
    assert plain.content_type == "application/octet-stream"
    assert upload_key("acme", "upl_1") == "tenants/acme/uploads/upl_1"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"size_bytes": 0}, "size_bytes"),
        ({"size_bytes": -5}, "size_bytes"),
        ({"size_bytes": 1001}, "size_bytes"),
        ({"sha256": "xyz"}, "sha256"),
        ({"sha256": "a" * 63}, "sha256"),
        ({"name": "x" * 256}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"content_type": "image/\x01png"}, "content_type"),
        ({"request_id": "r" * 129}, "request_id"),
    ],
)
def test_bad_upload_fields_are_named(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_upload_request(upload(**fields), SETTINGS)
    assert [v.field for v in caught.value.violations] == [field]


def create(*inputs: executions_pb2.InputFile) -> executions_pb2.CreateExecutionRequest:
    return executions_pb2.CreateExecutionRequest(workflow_json=GRAPH, inputs=list(inputs))


def test_an_input_naming_an_upload_carries_no_content_and_keeps_its_media_type_open() -> None:
    new = parse_create_request(
        create(executions_pb2.InputFile(name="a.png", upload_id="upl_1")), SETTINGS
    )
    [item] = new.inputs
    assert (item.upload_id, item.content, item.content_type) == ("upl_1", b"", "")


def test_an_empty_upload_id_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_create_request(create(executions_pb2.InputFile(name="a.png", upload_id="")), SETTINGS)
    assert [v.field for v in caught.value.violations] == ["inputs[0].upload_id"]


def test_the_fingerprint_knows_an_upload_by_its_id_and_inline_files_as_before() -> None:
    def fingerprint(item: executions_pb2.InputFile) -> str:
        return parse_create_request(create(item), SETTINGS).fingerprint()

    one = fingerprint(executions_pb2.InputFile(name="a.png", upload_id="upl_1"))
    assert one == fingerprint(executions_pb2.InputFile(name="a.png", upload_id="upl_1"))
    assert one != fingerprint(executions_pb2.InputFile(name="a.png", upload_id="upl_2"))
    inline = parse_create_request(
        create(executions_pb2.InputFile(name="a.png", content=b"x")), SETTINGS
    )
    assert inline.inputs[0].source == inline.inputs[0].sha256


@pytest.mark.parametrize(
    "changes",
    [
        {"upload_url_ttl_s": 0.0},
        {"upload_url_ttl_s": 7200.0, "upload_ttl_s": 3600.0},
        {"upload_max_bytes": 0},
        {"upload_max_bytes": (5 << 30) + 1},
    ],
)
def test_upload_settings_that_cannot_work_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SchedulerSettings(**changes)  # type: ignore[arg-type]


def test_upload_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_UPLOAD_URL_TTL_S", "60")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_UPLOAD_TTL_S", "120")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_UPLOAD_MAX_BYTES", "4096")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_UPLOAD_SWEEP_INTERVAL_S", "5")
    s = SchedulerSettings.from_env()
    assert (s.upload_url_ttl_s, s.upload_ttl_s, s.upload_max_bytes) == (60.0, 120.0, 4096)
    assert s.upload_sweep_interval_s == 5.0
