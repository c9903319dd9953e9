"""What each part of the platform installs: ``pip install comfyfleet`` is the SDK and the CLI
(no torch, no server), ``[server]`` the control plane, ``[executor]`` the GPU executor.

Two checks, both without the network: every third-party module a part's code imports (read
from its import statements, through the repository modules it reaches) belongs to a
distribution its extra requires, directly or through a requirement; and the SDK and CLI
import and run, ``comfyfleet run`` included, in an interpreter that refuses every module the
base requirements do not bring.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.imports import in_repo, reachable_imports, repo_modules, top
from tests.support.paths import REPO_ROOT, comfyui_ref

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
NAME = canonicalize_name(PROJECT["name"])
# part -> (the packages of its code, the extras it is installed with)
PARTS = {
    "sdk and cli": (("comfyfleet.sdk", "comfyfleet.cli"), ()),
    "control plane": (
        (
            "services.gateway",
            "services.scheduler",
            "services.models",
            "services.webhook",
            "services.migrate",
        ),
        ("server",),
    ),
    "executor": (("services.executor",), ("executor",)),
}
# Imported by a part's code although its extra leaves them out, and why.
INSTALLED_APART = {
    "runpod": "the RunPod worker images install the runpod SDK at a pinned version",
    "grpc_tools": "`make proto` regenerates the gateway's proto comments ([dev])",
}
SERVER_ONLY = {"asyncpg", "nats-py", "minio", "boto3", "aiohttp", "prometheus-client"}
EXECUTOR_ONLY = {"torch", "numpy", "safetensors"}


@cache
def requirements_of(dist: str, extras: frozenset[str]) -> frozenset[str]:
    """``dist`` with ``extras`` and everything that brings, as installed here (by name)."""
    if dist == NAME:
        declared = [*PROJECT["dependencies"]]
        for extra in extras:
            declared += PROJECT["optional-dependencies"][extra]
    else:
        declared = metadata.requires(dist) or []
    found = {dist}
    for text in declared:
        req = Requirement(text)
        wanted = [{"extra": e} for e in extras or {""}]
        if req.marker is None or any(req.marker.evaluate(env) for env in wanted):
            name = canonicalize_name(req.name)
            found |= requirements_of(name, frozenset(req.extras))
    return frozenset(found)


def installed(extras: Iterable[str]) -> frozenset[str]:
    return requirements_of(NAME, frozenset(extras))


def third_party_imports(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level modules outside the standard library and the repository -> who imports."""
    found: dict[str, set[str]] = {}
    for module in repo_modules():
        if module.startswith(packages):
            for imp in reachable_imports(module):
                name = top(imp.module)
                if in_repo(imp.module) is None and name not in sys.stdlib_module_names:
                    where = f"{imp.path.relative_to(REPO_ROOT)}:{imp.line}"
                    found.setdefault(name, set()).add(where)
    found.pop("__future__", None)
    return found


@pytest.mark.parametrize("part", sorted(PARTS))
def test_each_part_imports_only_what_its_extra_installs(part: str) -> None:
    packages, extras = PARTS[part]
    allowed = installed(extras)
    providers = metadata.packages_distributions()
    missing = []
    for module, where in sorted(third_party_imports(packages).items()):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & allowed and module not in INSTALLED_APART:
            missing.append(f"{module} ({', '.join(sorted(dists)) or 'not installed'}):")
            missing += [f"    {line}" for line in sorted(where)[:3]]
    assert not missing, f"{part} {extras}: add to pyproject.toml\n" + "\n".join(missing)


def test_the_base_install_has_neither_torch_nor_the_server() -> None:
    base = installed(())
    assert not base & (SERVER_ONLY | EXECUTOR_ONLY), sorted(base)
    assert not installed(["server"]) & EXECUTOR_ONLY
    assert not installed(["executor"]) & {"asyncpg", "nats-py", "minio", "boto3"}
    assert installed(["dev"]) >= installed(["server"]) | installed(["executor"])


# Run by a fresh interpreter: refuses to import any module that neither the standard
# library, the repository nor a distribution of ``allowed`` provides.
ONLY_BASE = """
import importlib, importlib.abc, importlib.metadata, sys
allowed = set(sys.argv[1].split(","))
providers = importlib.metadata.packages_distributions()
ok = {m for m, ds in providers.items() if any(d.lower().replace("_", "-") in allowed for d in ds)}
ok |= set(sys.stdlib_module_names) | {"comfyfleet", "services"} | set(sys.modules)
class OnlyBase(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in ok:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, OnlyBase())
for module in sys.argv[2].split(","):
    importlib.import_module(module)
from comfyfleet.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def run_with_base_only(*args: str) -> subprocess.CompletedProcess[str]:
    modules = [m for m in repo_modules() if m.startswith(PARTS["sdk and cli"][0])]
    allowed = ",".join(sorted(installed(())))
    return subprocess.run(
        [sys.executable, "-c", ONLY_BASE, allowed, ",".join(modules), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )


def test_the_sdk_and_cli_run_with_the_base_requirements_only() -> None:
    done = run_with_base_only("submit", "--help")

    assert done.returncode == 0, done.stderr
    assert "workflow" in done.stdout


def test_comfyfleet_run_without_the_executor_says_what_to_install(tmp_path: Path) -> None:
    workflow = comfyui_ref() / "workflows" / "a_tiny.json"

    done = run_with_base_only("run", str(workflow), "--out", str(tmp_path))

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: comfyfleet run needs the executor (No module named")
    assert done.stderr.endswith("pip install 'comfyfleet[executor]'\n")
