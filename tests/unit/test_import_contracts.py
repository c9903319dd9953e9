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

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support.paths import REPO_ROOT

CHECKED = ("comfyfleet", "services")
NOT_IN_WORKFLOW = ("grpc", "torch")


@dataclass(frozen=True)
class Import:
    """One module an import statement names, and where the statement is."""

    module: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line} imports {self.module}"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, module: str, path: Path, *, package: bool = False) -> list[Import]:
    """The modules ``source`` imports, relative imports resolved against ``module``. For
    ``from a import b`` both ``a`` and ``a.b`` are listed: ``b`` may be a module."""
    base = module.split(".") if package else module.split(".")[:-1]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = base[: len(base) - node.level + 1] if node.level else []
            origin = ".".join([*parent, *([node.module] if node.module else [])])
            found.append(Import(origin, path, node.lineno))
            found += [Import(f"{origin}.{a.name}", path, node.lineno) for a in node.names]
    return found


@cache
def repo_modules() -> dict[str, Path]:
    files = (p for top in CHECKED for p in (REPO_ROOT / top).rglob("*.py"))
    return {module_name(p): p for p in files if ".venv" not in p.parts}


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    path = repo_modules()[module]
    package = path.name == "__init__.py"
    return tuple(imports_in(path.read_text(), module, path, package=package))


def top(name: str) -> str:
    return name.split(".", 1)[0]


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


def in_repo(name: str) -> str | None:
    """The repository module an imported name is (or lies in), None for other packages."""
    while name:
        if name in repo_modules():
            return name
        name = name.rpartition(".")[0]
    return None


def reachable_imports(start: str) -> Iterator[Import]:
    """Every import statement of ``start`` and of the repository modules it reaches."""
    seen, todo = {start}, [start]
    while todo:
        for imp in imports_of(todo.pop()):
            yield imp
            inner = in_repo(imp.module)
            # Importing a.b.c runs a/__init__ and a/b/__init__ first.
            while inner and inner not in seen:
                seen.add(inner)
                todo.append(inner)
                inner = in_repo(inner.rpartition(".")[0])


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
