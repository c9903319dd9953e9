"""Environment requests as the SDK builds them, and the CLI's environment commands' parsing."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from comfyfleet.cli.main import parser
from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.sdk.requests import (
    catalog_request,
    create_request,
    default_environment_request,
    environment_request,
    object_info_of,
)

SPEC = {
    "engine": "comfyui",
    "comfyui_version": "0.3.64",
    "custom_nodes": [{"name": "pack", "source": "https://example.com/pack.git", "revision": "abc"}],
    "python_packages": ["numpy<3"],
    "apt_packages": ["ffmpeg"],
    "models": [{"folder": "checkpoints", "name": "sd15.safetensors", "sha256": "0" * 64}],
    "description": "SD 1.5",
}


def test_submit_names_its_environment() -> None:
    assert create_request("{}", environment="comfy").environment == "comfy"
    assert create_request("{}").environment == ""


def test_an_environment_request_reads_a_spec_in_the_protos_field_names() -> None:
    request = environment_request(SPEC, name="comfy", request_id="r-1")
    env = request.environment
    assert (env.name, env.engine, env.comfyui_version) == ("comfy", "comfyui", "0.3.64")
    assert env.custom_nodes[0].revision == "abc" and env.models[0].folder == "checkpoints"
    assert list(env.apt_packages) == ["ffmpeg"] and request.request_id == "r-1"
    same = environment_request(env)
    assert same.environment == env and same.environment is not env
    with pytest.raises(ValueError, match="not an environment spec"):
        environment_request({"engine": "comfyui", "gpu": "big"})


def test_catalogs_are_asked_for_as_exact_json_text() -> None:
    assert catalog_request("comfy").view == environments_pb2.CATALOG_VIEW_JSON
    object_info = {"N": {"input": {"required": {"seed": ["INT", {"max": 2**64 - 1}]}}}}
    exact = environments_pb2.EnvironmentCatalog(object_info_json=json.dumps(object_info))
    assert object_info_of(exact) == object_info
    as_struct = environments_pb2.EnvironmentCatalog()
    json_format.ParseDict({"N": {"x": 1}}, as_struct.object_info)
    assert object_info_of(as_struct) == {"N": {"x": 1.0}}


def test_a_default_environment_is_set_through_update_tenant() -> None:
    request = default_environment_request("ten_1", "comfy")
    assert request.tenant.default_environment == "comfy"
    assert list(request.update_mask.paths) == ["default_environment"]


def test_environment_commands_parse() -> None:
    args = parser().parse_args(["submit", "wf.json", "--environment", "comfy"])
    assert args.environment == "comfy"
    args = parser().parse_args(["environments", "catalog", "comfy", "--node", "KSampler"])
    assert (args.name, args.node) == ("comfy", "KSampler")
    args = parser().parse_args(["environments", "create", "--spec", "env.json"])
    assert args.spec == "env.json" and args.name is None
    with pytest.raises(SystemExit):
        parser().parse_args(["environments", "create"])
