"""Where the devstack keeps its state and finds its project-local tools."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]


def default_home() -> Path:
    """The devstack's base dir: $COMFYFLEET_HOME, else `.comfyfleet/` at the repo root."""
    override = os.environ.get("COMFYFLEET_HOME")
    if override:
        return Path(override).resolve()
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".comfyfleet"
    return Path.cwd() / ".comfyfleet"


def node_dir() -> Path:
    """Where scripts/install-system-deps.sh installs the S3 server's npm packages."""
    override = os.environ.get("COMFYFLEET_NODE_DIR")
    return Path(override).resolve() if override else REPO_ROOT / ".comfyfleet" / "node"
