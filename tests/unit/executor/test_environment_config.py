"""The executor's environment: COMFYFLEET_ENVIRONMENT and the optional spec file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyfleet.common.config import ConfigError
from comfyfleet.environments.v1 import environments_pb2
from services.executor.config import Config

NAMES = ("EXECUTOR_ENGINE", "COMFYUI_URL", "COMFYUI_COMMAND", "ENVIRONMENT", "ENVIRONMENT_SPEC")

SPEC = {
    "engine": "comfyui",
    "comfyui_version": "0.3.64",
    "custom_nodes": [
        {"name": "comfyfleet-test-nodes", "source": "tests/custom_nodes/x", "revision": ""}
    ],
    "python_packages": ["numpy<3"],
    "apt_packages": ["libgl1"],
    "models": [
        {
            "folder": "checkpoints",
            "name": "tiny-sd15.safetensors",
            "sha256": "8e" * 32,
            # Where the install step fetches it from: not part of the environment.
            "path": "models/tiny-sd15.safetensors",
        }
    ],
    "description": "SD1.5 on ComfyUI",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(f"COMFYFLEET_{name}", raising=False)


def comfyui(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_ENGINE", "comfyui")
    monkeypatch.setenv("COMFYFLEET_COMFYUI_URL", "http://comfy:8188")
    for name, value in env.items():
        monkeypatch.setenv(f"COMFYFLEET_{name}", value)


def test_a_native_executor_runs_native_unless_told_otherwise() -> None:
    cfg = Config.from_env()

    assert cfg.environment == "native"
    assert cfg.declared_environment() == environments_pb2.Environment(
        name="native", engine="native"
    )


def test_a_comfyui_executor_must_name_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    comfyui(monkeypatch)

    with pytest.raises(ConfigError, match="COMFYFLEET_ENVIRONMENT is required"):
        Config.from_env()


def test_the_spec_file_describes_the_environment_it_declares(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = tmp_path / "env.json"
    spec.write_text(json.dumps(SPEC))
    comfyui(monkeypatch, ENVIRONMENT="sd15-comfy", ENVIRONMENT_SPEC=str(spec))

    declared = Config.from_env().declared_environment()

    assert (declared.name, declared.engine, declared.comfyui_version) == (
        "sd15-comfy",
        "comfyui",
        "0.3.64",
    )
    assert [(n.name, n.source) for n in declared.custom_nodes] == [
        ("comfyfleet-test-nodes", "tests/custom_nodes/x")
    ]
    assert list(declared.python_packages) == ["numpy<3"]
    assert list(declared.apt_packages) == ["libgl1"]
    assert [(m.folder, m.name) for m in declared.models] == [
        ("checkpoints", "tiny-sd15.safetensors")
    ]
    assert declared.description == "SD1.5 on ComfyUI"


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("Sd15", None, "lowercase letters"),
        ("sd15", {"engine": "native"}, "for the native engine"),
        ("sd15", {"name": "other"}, "names 'other'"),
        ("sd15", {"engine": "comfyui", "custom_nodes": "x"}, "ENVIRONMENT_SPEC"),
        ("sd15", {"engine": "comfyui", "extras": []}, "ENVIRONMENT_SPEC"),
        ("sd15", {"custom_nodes": [{"name": "x"}]}, r"spec.custom_nodes\[0\].source"),
    ],
)
def test_a_bad_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    spec: dict[str, object] | None,
    message: str,
) -> None:
    env = {"ENVIRONMENT": name}
    if spec is not None:
        path = tmp_path / "env.json"
        path.write_text(json.dumps(spec))
        env["ENVIRONMENT_SPEC"] = str(path)
    comfyui(monkeypatch, **env)

    with pytest.raises(ConfigError, match=message):
        Config.from_env()


def test_a_missing_spec_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    comfyui(monkeypatch, ENVIRONMENT="sd15", ENVIRONMENT_SPEC=str(tmp_path / "none.json"))

    with pytest.raises(ConfigError, match=r"none\.json"):
        Config.from_env()
