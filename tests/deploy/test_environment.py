"""Every COMFYFLEET_* variable a deploy target sets is one its service reads, with a value
its Config accepts: a misspelt or stale name would otherwise be ignored without a word."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from string import Template
from typing import Any

import pytest

from tests.deploy.support import (
    DEPLOY,
    Obj,
    compose,
    dockerfile,
    find,
    load_config,
    pod_spec,
    port_of,
    render,
    workloads,
)

CPU = DEPLOY / "docker" / "Dockerfile"
GPU = DEPLOY / "docker" / "Dockerfile.executor"
# A deploy target's container -> (service whose Config it builds, image target).
IMAGE = {
    "gateway": (CPU, "gateway"),
    "scheduler": (CPU, "scheduler"),
    "models": (CPU, "models"),
    "webhook": (CPU, "webhook"),
    "executor": (GPU, "executor"),
    "runpod-worker": (GPU, "runpod-worker"),
    "comfyui-executor": (GPU, "comfyui-executor"),
    "comfyui-runpod-worker": (GPU, "comfyui-runpod-worker"),
}
SECRET_VALUES = {"database-url": "postgresql://comfyfleet:secret@postgres:5432/comfyfleet"}
# Values a template leaves to the operator (envsubst), filled for the check.
TEMPLATE_VALUES = {
    "AWS_ACCOUNT_ID": "123456789012",
    "AWS_REGION": "us-east-1",
    "COMFYFLEET_VERSION": "0.1.0",
    "COMFYFLEET_REGISTRY": "registry.example.com/comfyfleet",
    "COMFYFLEET_SCHEDULER_ADDR": "scheduler.comfyfleet.internal:50052",
    "COMFYFLEET_EXECUTOR_IMAGE": "executor",
    "COMFYFLEET_ENVIRONMENT": "native",
}


def image_env(target: str) -> dict[str, str]:
    path, stage = IMAGE[target]
    return dict(dockerfile(path)[1][stage].env)


def check(
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    env: dict[str, str],
    shared: frozenset[str] = frozenset(),
) -> Any:
    """The service's Config from ``env``; every COMFYFLEET_* name must be read by it, except
    ``shared`` ones (a ConfigMap all services take, checked as a whole elsewhere)."""
    cfg, read = load_config(monkeypatch, service, env)
    unread = {k for k in env if k.startswith("COMFYFLEET_")} - read - shared
    assert not unread, f"{service} never reads {sorted(unread)}"
    return cfg


# --- compose ----------------------------------------------------------------------------


def compose_targets() -> Iterator[tuple[str, str, str]]:
    for name, svc in compose()["services"].items():
        target = svc.get("build", {}).get("target")
        if target:
            yield name, target, "executor" if target == "executor" else target


@pytest.mark.parametrize("name,target,service", list(compose_targets()))
def test_compose_environment_is_read(
    monkeypatch: pytest.MonkeyPatch, name: str, target: str, service: str
) -> None:
    env = {**image_env(target), **compose()["services"][name]["environment"]}
    # A variable without a value is taken from compose's own environment: unset here.
    cfg = check(monkeypatch, service, {k: str(v) for k, v in env.items() if v is not None})
    assert port_of(cfg.grpc_addr) == port_of(image_env(target)["COMFYFLEET_GRPC_ADDR"])


# --- Kubernetes ---------------------------------------------------------------------------


def config_maps(objects: list[Obj]) -> dict[str, dict[str, str]]:
    return {m["metadata"]["name"]: m.get("data", {}) for m in find(objects, "ConfigMap")}


def shared_names(objects: list[Obj], container: Obj) -> frozenset[str]:
    maps = config_maps(objects)
    return frozenset(
        k for s in container.get("envFrom", []) for k in maps[s["configMapRef"]["name"]]
    )


def container_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    maps = config_maps(objects)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for e in container.get("env", []):
        ref = e.get("valueFrom", {})
        if "value" in e:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
        elif "configMapKeyRef" in ref:
            value = maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            value = SECRET_VALUES.get(ref["secretKeyRef"]["key"], "secret")
        else:
            value = {"status.podIP": "10.0.0.7"}.get(ref["fieldRef"]["fieldPath"], "pod-0")
        env[e["name"]] = value
    return env


def k8s_targets() -> Iterator[tuple[str, str, str]]:
    yield from (("base", n, n) for n in ("gateway", "scheduler", "models", "webhook", "executor"))
    yield from (("overlays/dev", n, n) for n in ("executor", "gateway"))
    yield ("overlays/gpu", "executor", "executor")
    yield ("bootstrap", "comfyfleet-admin-key", "gateway")


@pytest.mark.parametrize("overlay,workload,service", list(k8s_targets()))
def test_kubernetes_environment_is_read(
    monkeypatch: pytest.MonkeyPatch, overlay: str, workload: str, service: str
) -> None:
    objects = render(overlay)
    (obj,) = [w for w in workloads(objects) if w["metadata"]["name"] == workload]
    (container,) = pod_spec(obj)["containers"]
    env = {**image_env(service), **container_env(objects, container)}
    cfg = check(monkeypatch, service, env, shared_names(objects, container))
    if "readinessProbe" in container:
        assert port_of(cfg.grpc_addr) == container["readinessProbe"]["grpc"]["port"]


@pytest.mark.parametrize("overlay", ("base", "overlays/dev", "overlays/gpu"))
def test_every_shared_setting_is_read_by_a_service_that_takes_it(
    monkeypatch: pytest.MonkeyPatch, overlay: str
) -> None:
    objects = render(overlay)
    shared: set[str] = set()
    read: set[str] = set()
    for obj in find(objects, "Deployment"):
        (container,) = pod_spec(obj)["containers"]
        names = shared_names(objects, container)
        if names and obj["metadata"]["name"] in IMAGE:
            env = {**image_env(obj["metadata"]["name"]), **container_env(objects, container)}
            read |= load_config(monkeypatch, obj["metadata"]["name"], env)[1]
            shared |= names
    assert shared, "no service takes the shared ConfigMap"
    unread = {k for k in shared if k.startswith("COMFYFLEET_")} - read
    assert not unread, f"no service reads {sorted(unread)}"


# --- ECS and RunPod -----------------------------------------------------------------------


def filled(path: str) -> Obj:
    text = Template((DEPLOY / path).read_text()).safe_substitute(TEMPLATE_VALUES)
    loaded: Obj = json.loads(text)
    return loaded


def test_ecs_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    (container,) = filled("ecs/executor-task-definition.json")["containerDefinitions"]
    env = {**image_env("executor"), **{e["name"]: e["value"] for e in container["environment"]}}
    cfg = check(monkeypatch, "executor", env)
    assert cfg.provider == "ecs"
    assert [p["containerPort"] for p in container["portMappings"]] == [port_of(cfg.grpc_addr)]


@pytest.mark.parametrize("target", ["comfyui-executor", "comfyui-runpod-worker"])
def test_comfyui_images_environment_is_read(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    # The spec is read from the path the image copies it to: use the file it is copied from.
    spec = str(DEPLOY / "environments" / "comfyui.json")
    # The name is the build's ENVIRONMENT_NAME argument; its default names that spec.
    env = {k: v.replace("${ENVIRONMENT_NAME}", "comfyui") for k, v in image_env(target).items()}
    cfg = check(monkeypatch, "executor", {**env, "COMFYFLEET_ENVIRONMENT_SPEC": spec})
    assert cfg.engine == "comfyui" and cfg.environment == "comfyui"


def test_runpod_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**image_env("runpod-worker"), **filled("runpod/endpoint.json")["template"]["env"]}
    cfg = check(monkeypatch, "executor", env)
    assert cfg.provider == "runpod" and cfg.device == "cuda"


def test_a_misspelt_variable_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="COMFYFLEET_EXECUTOR_DEVCE"):
        check(monkeypatch, "executor", {"COMFYFLEET_EXECUTOR_DEVCE": "cuda"})
