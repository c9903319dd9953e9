"""The repository's import graph, read from the import statements of its ``.py`` files.

Every statement counts, those inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support.paths import REPO_ROOT

PACKAGES = ("comfyfleet", "services")


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
    files = (p for top in PACKAGES for p in (REPO_ROOT / top).rglob("*.py"))
    return {module_name(p): p for p in files if ".venv" not in p.parts}


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    path = repo_modules()[module]
    package = path.name == "__init__.py"
    return tuple(imports_in(path.read_text(), module, path, package=package))


def top(name: str) -> str:
    return name.split(".", 1)[0]


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
