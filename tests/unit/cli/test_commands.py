"""The remote subcommands' parsing, the SDK's request builders and its error messages."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from comfyfleet.cli.main import parse_labels, parse_submit_inputs, parser
from comfyfleet.cli.transfer import BytesLine, render_bytes
from comfyfleet.cli.usage import UsageError
from comfyfleet.common.errors import (
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.models.v1 import models_pb2
from comfyfleet.sdk.client import output_path
from comfyfleet.sdk.errors import ApiError, describe
from comfyfleet.sdk.requests import create_request, model_type, state_value, upload_requests


def test_submit_inputs_take_files_and_urls(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    got = parse_submit_inputs([f"a.png={image}", "b.png=https://example.com/b.png"])
    assert got == {"a.png": image, "b.png": "https://example.com/b.png"}
    for bad in ["noequals", "=x", f"c.png={tmp_path / 'missing.png'}"]:
        with pytest.raises(UsageError):
            parse_submit_inputs([bad])


def test_labels_are_key_value_pairs() -> None:
    assert parse_labels(["team=a", "run=", "k=v=w"]) == {"team": "a", "run": "", "k": "v=w"}
    with pytest.raises(UsageError):
        parse_labels(["novalue"])


def test_create_request_puts_urls_and_bytes_in_their_fields() -> None:
    request = create_request(
        {"1": {"class_type": "X", "inputs": {}}},
        {"a.png": b"bytes", "b.png": "http://example.com/b.png"},
        labels={"team": "a"},
        request_id="r1",
    )
    a, b = request.inputs
    assert a.WhichOneof("source") == "content" and a.content_type == "image/png"
    assert b.WhichOneof("source") == "url"
    assert request.labels == {"team": "a"} and request.request_id == "r1"
    with pytest.raises(ValueError):
        create_request("{}", {"c.png": "/a/local/path"})


def test_state_and_model_type_names() -> None:
    assert state_value("running") == executions_pb2.EXECUTION_STATE_RUNNING
    assert state_value("EXECUTION_STATE_FAILED") == executions_pb2.EXECUTION_STATE_FAILED
    assert state_value(None) == 0
    assert model_type("lora") == models_pb2.MODEL_TYPE_LORA
    assert model_type("diffusion-model") == models_pb2.MODEL_TYPE_DIFFUSION_MODEL
    with pytest.raises(ValueError, match="one of"):
        state_value("exploded")
    with pytest.raises(ValueError, match="one of"):
        model_type("pickle")


def test_upload_requests_stream_the_description_then_chunks(tmp_path: Path) -> None:
    file = tmp_path / "m.safetensors"
    file.write_bytes(b"x" * 25)
    seen: list[tuple[int, int]] = []
    messages = list(
        upload_requests(file, "vae", progress=lambda d, t: seen.append((d, t)), chunk_bytes=10)
    )
    assert messages[0].model.name == "m.safetensors"
    assert messages[0].model.type == models_pb2.MODEL_TYPE_VAE
    assert b"".join(m.chunk for m in messages[1:]) == b"x" * 25
    assert seen == [(10, 25), (20, 25), (25, 25)]


def test_outputs_never_land_outside_the_folder(tmp_path: Path) -> None:
    sneaky = executions_pb2.Output(filename="../../etc/passwd", subfolder="../up")
    path = output_path(tmp_path, sneaky)
    assert path == tmp_path / "up" / "passwd"
    assert output_path(tmp_path, executions_pb2.Output(node_id="7")) == tmp_path / "node7.bin"


def test_rate_limit_errors_say_when_to_retry() -> None:
    err = ApiError(ResourceExhausted("slow down", retry_after_s=2.5).to_status())
    assert err.retry_after_s == pytest.approx(2.5)
    assert "retry in 2.5s" in str(err)
    assert err.reason == "RESOURCE_EXHAUSTED"


def test_field_violations_and_hints_are_printed() -> None:
    bad = InvalidArgument("the request is invalid", [FieldViolation("inputs[0].url", "404")])
    assert "  - inputs[0].url: 404" in describe(bad.to_status())
    unauthenticated = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message="no key")
    assert "COMFYFLEET_API_KEY" in describe(unauthenticated)
    # A connection failure suggests starting the platform; a service's own UNAVAILABLE not.
    down = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="connect failed")
    assert "make up" in describe(down)
    assert "make up" not in describe(Unavailable("storing inputs failed").to_status())


def test_quota_failures_are_listed() -> None:
    quota = error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(subject="api_key:k", description="2/s")
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(quota)
    retry = any_pb2.Any()
    retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)))
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message="m", details=[packed, retry]
    )
    text = describe(status)
    assert "  - api_key:k: 2/s" in text and "retry in 1.0s" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["watch", "exe_1", "--out", "o"],
        ["results", "exe_1", "--out", "o"],
        ["list", "--state", "running"],
        ["submit", "wf.json", "--label", "a=b", "--input", "x.png=https://h/x.png"],
        ["models", "push", "m.safetensors", "--type", "lora"],
        ["models", "push", "m.safetensors", "--type", "lora", "--multipart-threshold", "128"],
        [
            "models",
            "push",
            "m.safetensors",
            "--type",
            "vae",
            "--part-size",
            "16",
            "--parallel",
            "8",
        ],
        ["models", "list", "--type", "checkpoint"],
        ["models", "delete", "mdl_1"],
        ["webhooks", "add", "https://h/hook", "--event", "execution.*"],
        ["webhooks", "list"],
        ["webhooks", "test", "sub_1"],
        ["webhooks", "deliveries", "sub_1"],
        ["webhooks", "delete", "sub_1"],
        ["keys", "create", "--scope", "executions:write"],
        ["keys", "create", "--tenant", "acme"],
        ["keys", "list"],
        ["keys", "revoke", "abc"],
    ],
)
def test_every_subcommand_parses(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert callable(args.run)


def test_submit_and_list_take_their_filters() -> None:
    argv = ["submit", "wf.json", "--webhook-event", "execution.succeeded"]
    args = parser().parse_args([*argv, "--webhook-event", "execution.failed"])
    assert args.webhook_event == ["execution.succeeded", "execution.failed"]
    assert parser().parse_args(["submit", "wf.json"]).webhook_event == []
    args = parser().parse_args(["list", "--label", "env=prod", "--label", "team=a"])
    assert parse_labels(args.label) == {"env": "prod", "team": "a"}
    request = create_request("{}", webhook_events=("execution.*",))
    assert list(request.webhook_events) == ["execution.*"]


def test_model_types_are_checked_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["models", "push", "m.ckpt", "--type", "pickle"])


def test_multipart_sizes_are_whole_mib() -> None:
    args = parser().parse_args(["models", "push", "m.safetensors", "--type", "lora"])
    assert (args.multipart_threshold, args.part_size, args.parallel) == (64, 0, 4)
    for bad in ("-1", "1.5", "big"):
        with pytest.raises(SystemExit):
            parser().parse_args(
                ["models", "push", "m.safetensors", "--type", "lora", "--part-size", bad]
            )


def test_byte_progress_prints_quarters_when_not_a_terminal() -> None:
    out = io.StringIO()
    line = BytesLine("m.safetensors", out)
    for done in range(0, 101, 5):
        line(done, 100)
    line.close()
    assert len(out.getvalue().splitlines()) == 5
    assert render_bytes("m", 0, 0).endswith("0 B/0 B")
    assert render_bytes("m", 1536, 3 * 1024**3).endswith("1.5 KiB/3.0 GiB")
