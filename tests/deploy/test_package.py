"""The images install the package with `pip install .`: the wheel must hold what the
services read at run time, not only their Python modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.paths import REPO_ROOT


def build_wheel(tmp_path: Path) -> set[str]:
    # From a copy: a build in the checkout would leave build/ and egg-info behind.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for package in ("comfyfleet", "services"):
        shutil.copytree(REPO_ROOT / package, src / package, ignore=ignore)
    # Built as pip builds it in the image: isolated, with the build backend pyproject names.
    pip_wheel = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip_wheel, "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_holds_every_service_migration_and_package_data(tmp_path: Path) -> None:
    files = build_wheel(tmp_path)
    needed = {
        str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "services").glob("*/migrations/*.sql")
    }
    needed.add("services/gateway/rest/proto_comments.json")
    assert len(needed) > 1
    missing = sorted(needed - files)
    assert not missing, f"pyproject.toml's package data leaves out {missing}"
