"""`make up COMFYUI_DIR=...`: a ComfyUI executor beside the native one."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from comfyfleet.devstack.errors import DevStackError
from comfyfleet.devstack.launcher import (
    ComfyUIExecutor,
    PlatformAddrs,
    platform_services,
    work_dirs,
)


def _install(root: Path) -> Path:
    (root / "ComfyUI").mkdir(parents=True)
    (root / "ComfyUI" / "main.py").write_text("")
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "bin" / "python").write_text("")
    return root


def test_without_comfyui_dir_the_platform_has_one_native_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    assert ComfyUIExecutor.from_env() is None
    names = [s.name for s in platform_services(comfyui=ComfyUIExecutor.from_env())]
    assert names == ["models", "webhook", "scheduler", "gateway", "executor"]


def test_comfyui_dir_adds_an_executor_of_a_comfyui_environment_started_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _install(tmp_path / "comfy")
    monkeypatch.setenv("COMFYUI_DIR", str(root))
    monkeypatch.setenv("COMFYUI_ENVIRONMENT", "sd15")
    services = platform_services(PlatformAddrs(), ComfyUIExecutor.from_env())
    comfy = services[-1]
    assert comfy.name == "executor-comfyui"
    assert comfy.python_module == "services.executor"
    assert comfy.env["COMFYFLEET_EXECUTOR_ENGINE"] == "comfyui"
    assert comfy.env["COMFYFLEET_ENVIRONMENT"] == "sd15"
    assert comfy.env["COMFYFLEET_EXECUTOR_ADVERTISE_ADDR"] == comfy.grpc_addr
    assert comfy.env["COMFYFLEET_SCHEDULER_ADDR"] == PlatformAddrs().scheduler
    argv = shlex.split(comfy.env["COMFYFLEET_COMFYUI_COMMAND"])
    assert argv[:2] == [str(root / "venv/bin/python"), str(root / "ComfyUI/main.py")]
    # Its own metrics port and executor id, never the native executor's.
    native = next(s for s in services if s.name == "executor")
    assert comfy.env["COMFYFLEET_METRICS_ADDR"] != native.env["COMFYFLEET_METRICS_ADDR"]
    assert comfy.grpc_addr != native.grpc_addr


def test_each_extra_executor_gets_a_work_dir_of_its_own(tmp_path: Path) -> None:
    services = work_dirs(
        platform_services(comfyui=ComfyUIExecutor(_install(tmp_path / "c"))), tmp_path
    )
    comfy = next(s for s in services if s.name == "executor-comfyui")
    native = next(s for s in services if s.name == "executor")
    assert comfy.env["COMFYFLEET_EXECUTOR_WORK_DIR"] == str(tmp_path / "executor-comfyui")
    assert "COMFYFLEET_EXECUTOR_WORK_DIR" not in native.env  # the platform's default


def test_a_dir_that_is_not_a_comfyui_install_is_refused_naming_what_is_missing(
    tmp_path: Path,
) -> None:
    with pytest.raises(DevStackError, match=r"main\.py"):
        platform_services(comfyui=ComfyUIExecutor(tmp_path))
