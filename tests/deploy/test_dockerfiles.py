"""The images: one target per service, pinned bases, non-root, nothing fetched by ADD."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, Stage, dockerfile

CPU = DEPLOY / "docker" / "Dockerfile"
GPU = DEPLOY / "docker" / "Dockerfile.executor"
# target -> (Dockerfile, module it runs, gRPC port or None)
TARGETS = {
    "gateway": (CPU, "services.gateway", 50051),
    "scheduler": (CPU, "services.scheduler", 50052),
    "models": (CPU, "services.models", 50053),
    "webhook": (CPU, "services.webhook", 50054),
    "executor": (GPU, "services.executor", 50055),
    "runpod-worker": (GPU, "services.executor.runpod_worker", None),
    "comfyui-executor": (GPU, "services.executor", 50055),
    "comfyui-runpod-worker": (GPU, "services.executor.runpod_worker", None),
}


def stage(target: str) -> Stage:
    path, _, _ = TARGETS[target]
    return dockerfile(path)[1][target]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_runs_its_module_as_a_non_root_user(target: str) -> None:
    s = stage(target)
    _, module, port = TARGETS[target]
    assert s.last("CMD") == f'["python", "-m", "{module}"]'
    user = s.last("USER")
    assert user is not None and re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), user
    assert s.env.get("PYTHONDONTWRITEBYTECODE") == "1", "a read-only root cannot take .pyc files"
    if port is not None:
        assert s.env["COMFYFLEET_GRPC_ADDR"] == f"0.0.0.0:{port}"
        assert str(port) in (s.last("EXPOSE") or "")
        assert "healthcheck.py" in (s.last("HEALTHCHECK") or "")
    else:
        assert s.last("HEALTHCHECK") == "NONE"


@pytest.mark.parametrize("path", [CPU, GPU], ids=lambda p: p.name)
def test_base_images_are_pinned(path: Path) -> None:
    args, stages = dockerfile(path)
    bases = {s.base for s in stages.values() if s.base not in stages}
    assert bases, "no base image"
    for base in bases:
        image = args.get(base.strip("${}"), base)
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), image


def test_the_executor_runs_on_a_cuda_runtime_image_with_torch_for_cuda() -> None:
    args, stages = dockerfile(GPU)
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", args["CUDA_IMAGE"])
    build_args = dict(a.split("=", 1) for kw, a in stages["build"].instructions if kw == "ARG")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", build_args["TORCH_INDEX_URL"])
    assert stage("executor").env["COMFYFLEET_EXECUTOR_DEVICE"] == "cuda"


@pytest.mark.parametrize("path", [CPU, GPU], ids=lambda p: p.name)
def test_nothing_is_added_from_urls_or_piped_into_a_shell(path: Path) -> None:
    for s in dockerfile(path)[1].values():
        for keyword, arg in s.instructions:
            assert keyword != "ADD", f"{s.name}: use COPY, not ADD"
            assert not re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", arg), arg


@pytest.mark.parametrize("path", [CPU, GPU], ids=lambda p: p.name)
def test_the_build_context_holds_what_the_copies_need(path: Path) -> None:
    ignore = path.with_name(path.name + ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for s in dockerfile(path)[1].values():
        for keyword, arg in s.instructions:
            if keyword == "COPY" and not arg.startswith("--from"):
                for source in arg.split()[:-1]:
                    assert source.rstrip("/") in allowed, f"{source} is ignored by the context"
                    assert (DEPLOY.parent / source).exists(), source


def pip_install(path: Path) -> str:
    """The build stage's RUN that installs the package."""
    (run,) = (a for k, a in dockerfile(path)[1]["build"].instructions if "pip install" in a)
    return run


def test_the_control_plane_installs_the_server_extra_and_refuses_torch() -> None:
    run = pip_install(CPU)
    assert "'.[server]'" in run
    assert "torch" not in run.replace("--absent torch", "")
    assert "verify_install.py --absent torch" in run
    assert "TORCH_INDEX_URL" not in CPU.read_text()


def test_the_executor_images_install_the_executor_extra() -> None:
    run = pip_install(GPU)
    assert "'.[executor]'" in run and '"${TORCH_INDEX_URL}"' in run


def test_verify_install_refuses_a_module_the_image_must_not_have() -> None:
    spec = importlib.util.spec_from_file_location("verify", DEPLOY / "docker" / "verify_install.py")
    assert spec is not None and spec.loader is not None
    verify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verify)

    assert verify.installed_anyway(["no_such_module_here"]) == []
    assert verify.installed_anyway(["json"]) == [
        "json is installed, and this image must not have it"
    ]


def test_verify_install_refuses_services_imported_from_a_source_tree() -> None:
    # The checkout's .venv has the package installed in editable mode: that is not an image.
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "docker" / "verify_install.py"), "gateway"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "not the installed package" in done.stderr


@pytest.mark.parametrize("target", ["comfyui-executor", "comfyui-runpod-worker"])
def test_comfyui_targets_run_the_comfyui_engine_on_their_own_comfyui(target: str) -> None:
    env = stage(target).env
    assert env["COMFYFLEET_EXECUTOR_ENGINE"] == "comfyui"
    assert env["COMFYFLEET_ENVIRONMENT_SPEC"] == "/opt/comfyui/environment.json"
    command = env["COMFYFLEET_COMFYUI_COMMAND"].strip('"').split()
    assert command[:2] == ["/opt/comfyui/venv/bin/python", "/opt/comfyui/ComfyUI/main.py"]
    build = dockerfile(GPU)[1]["comfyui-build"]
    runs = " ".join(arg for keyword, arg in build.instructions if keyword == "RUN")
    assert "services.executor.comfyui.install" in runs
    assert "--python /opt/comfyui/venv/bin/python" in runs
    revision = dict(a.split("=", 1) for k, a in build.instructions if k == "ARG")
    assert re.fullmatch(r"[0-9a-f]{7,40}", revision["COMFYUI_REVISION"])


@pytest.mark.parametrize(
    "spec", sorted((DEPLOY / "environments").glob("*.json")), ids=lambda p: p.name
)
def test_each_environment_spec_is_one_the_install_step_takes(spec: Path) -> None:
    from services.executor.comfyui.install import InstallSpec

    loaded = InstallSpec.load(spec)
    assert loaded.name == spec.stem
