"""Reading deploy/ the way the tools that consume it do: compose files with interpolation,
kustomize output, Dockerfile stages, and the environment each container would get."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
# Where scripts/validate-deploy.sh installs its tools.
TOOLS_BIN = (
    Path(os.environ.get("COMFYFLEET_DEPLOY_TOOLS", REPO_ROOT / ".comfyfleet" / "deploy-tools"))
    / "bin"
)
OVERLAYS = ("base", "overlays/dev", "overlays/gpu", "bootstrap")
SERVICES = ("gateway", "scheduler", "models", "webhook", "executor")
UID_ROOT = 0

Obj = dict[str, Any]


def tool(name: str) -> str:
    """The path of a deploy tool, or a skip naming the script that installs it."""
    for candidate in (TOOLS_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip(f"{name} is not installed: run scripts/validate-deploy.sh --install-only")


@functools.cache
def _render(overlay: str) -> tuple[Obj, ...]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(overlay: str) -> list[Obj]:
    """The objects `kubectl kustomize deploy/k8s/<overlay>` renders."""
    return list(_render(overlay))


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def pod_spec(obj: Obj) -> Obj:
    if obj["kind"] == "Pod":
        return dict(obj["spec"])
    return dict(obj["spec"]["template"]["spec"])


def workloads(objects: list[Obj]) -> Iterator[Obj]:
    return (o for o in objects if o["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"})


# --- compose -----------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.strip().startswith("#")}


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}; a required one must be set."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = values.get(name, "")
        if op.endswith("?") and not value:
            raise AssertionError(f"${{{name}}} is required ({arg}) and env.example lacks it")
        return value if value or not op.endswith("-") else arg

    return _INTERPOLATION.sub(one, text)


def compose() -> Obj:
    """compose.yaml with env.example's values, anchors and merge keys resolved."""
    text = (DEPLOY / "compose" / "compose.yaml").read_text()
    values = env_file(DEPLOY / "compose" / "env.example")
    loaded: Obj = yaml.safe_load(interpolate(text, values))
    return loaded


# --- Dockerfiles --------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [arg for kw, arg in self.instructions if kw == keyword]
        return found[-1] if found else None


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def _env_pairs(arg: str) -> dict[str, str]:
    pairs = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', arg)
    return {k: v.strip('"') for k, v in pairs}


def dockerfile(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """(ARG defaults before the first FROM, stages by name); a stage built FROM another
    stage starts with that stage's ENV and instructions."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(path.read_text()):
        keyword, _, arg = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = arg.partition(" AS ")
            parent = stages.get(base.strip())
            current = Stage(name.strip() or base.strip(), base.strip())
            if parent:
                current.env = dict(parent.env)
                current.instructions = list(parent.instructions)
            stages[current.name] = current
        elif current is None:
            if keyword == "ARG":
                k, _, v = arg.partition("=")
                args[k.strip()] = v.strip()
        else:
            current.instructions.append((keyword, arg))
            if keyword == "ENV":
                current.env.update(_env_pairs(arg))
    return args, stages


# --- what a service reads ------------------------------------------------------------------


class RecordingEnviron(dict[str, str]):
    """os.environ stand-in that remembers every name a Config looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def config_class(service: str) -> Any:
    module = __import__(f"services.{service}.config", fromlist=["Config"])
    return module.Config


def load_config(
    monkeypatch: pytest.MonkeyPatch, service: str, env: Mapping[str, str]
) -> tuple[Any, set[str]]:
    """The service's Config built from exactly ``env``, and the variables it read."""
    recording = RecordingEnviron(env)
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", recording)
        cfg = config_class(service).from_env()
    return cfg, recording.read


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])
