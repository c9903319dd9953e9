"""Import contracts: which part of the tree may import which.

- a service (``services.X``) imports no other service (``services.Y``): services talk over
  gRPC, and what two of them share lives in ``comfyfleet``;
- nothing in ``comfyfleet`` imports ``services``: the shared package, the SDK and the CLI
  install and run without any service's code;
- the workflow logic (``comfyfleet.workflow``) imports neither grpc nor torch, not even by
  way of another module of the repository it imports.

Every ``import`` statement counts, those inside functions too (a lazy import is still a
dependency). Tests, benchmarks and scripts may import anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tests.support.imports import (
    Import,
    imports_in,
    imports_of,
    reachable_imports,
    repo_modules,
    top,
)
from tests.support.paths import REPO_ROOT

NOT_IN_WORKFLOW = ("grpc", "torch")


def service_of(module: str) -> str | None:
    """``scheduler`` for ``services.scheduler.queue``; None outside a service's package
    (``services.migrate`` serves them all)."""
    parts = module.split(".")
    if parts[0] != "services" or len(parts) < 2:
        return None
    package = repo_modules().get(f"services.{parts[1]}")
    return parts[1] if package is not None and package.name == "__init__.py" else None


def cross_service_imports() -> Iterator[Import]:
    for module in repo_modules():
        own = service_of(module)
        if own is None:
            continue
        for imp in imports_of(module):
            other = service_of(imp.module)
            if other is not None and other != own:
                yield imp


def shared_package_imports_of_services() -> Iterator[Import]:
    for module in repo_modules():
        if top(module) == "comfyfleet":
            yield from (imp for imp in imports_of(module) if top(imp.module) == "services")


def workflow_imports_of(forbidden: tuple[str, ...]) -> Iterator[Import]:
    for module in repo_modules():
        if module.startswith("comfyfleet.workflow"):
            yield from (i for i in reachable_imports(module) if top(i.module) in forbidden)


def listed(found: Iterator[Import]) -> str:
    """One line per offending statement (``from a import b`` names ``a`` and ``a.b``)."""
    first: dict[tuple[Path, int], Import] = {}
    for imp in found:
        key = (imp.path, imp.line)
        if key not in first or len(imp.module) < len(first[key].module):
            first[key] = imp
    return "\n".join(str(imp) for _, imp in sorted(first.items()))


def test_the_tree_is_read() -> None:
    modules = repo_modules()
    assert "services.scheduler.queue" in modules and "comfyfleet.workflow.graph" in modules
    assert any(i.module == "comfyfleet.common.config" for i in imports_of("services.migrate"))


def test_no_service_imports_another() -> None:
    found = listed(cross_service_imports())
    assert not found, f"services import each other (share it in comfyfleet):\n{found}"


def test_the_shared_package_imports_no_service() -> None:
    found = listed(shared_package_imports_of_services())
    assert not found, f"comfyfleet imports services:\n{found}"


def test_the_workflow_logic_imports_neither_grpc_nor_torch() -> None:
    found = listed(workflow_imports_of(NOT_IN_WORKFLOW))
    assert not found, f"the workflow logic reaches grpc or torch:\n{found}"


# --- the checks find what they are meant to find -------------------------------------------


def parsed(source: str, module: str, *, package: bool = False) -> list[str]:
    path = REPO_ROOT / "x.py"
    return [i.module for i in imports_in(source, module, path, package=package)]


def test_lazy_relative_and_from_imports_are_all_read() -> None:
    source = "import a.b\ndef f():\n    from services.webhook import sender\nfrom . import c\n"

    assert parsed(source, "services.gateway.fetch") == [
        "a.b",
        "services.gateway",
        "services.gateway.c",
        "services.webhook",
        "services.webhook.sender",
    ]
    assert parsed("from .x import y", "services.gateway", package=True) == [
        "services.gateway.x",
        "services.gateway.x.y",
    ]
    assert parsed("from ..common import config", "comfyfleet.cli.run") == [
        "comfyfleet.common",
        "comfyfleet.common.config",
    ]


def test_services_are_told_apart() -> None:
    assert service_of("services.webhook.addresses") == "webhook"
    assert service_of("services.webhook") == "webhook"
    assert service_of("services.migrate") is None
    assert service_of("services") is None
    assert service_of("comfyfleet.common.config") is None


def test_a_workflow_module_reaching_grpc_through_common_is_found() -> None:
    reached = {i.module for i in reachable_imports("comfyfleet.common.errors")}
    assert "grpc" in reached
