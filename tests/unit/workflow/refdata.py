"""Locating the captured ComfyUI reference material (``shared/comfyui``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]


def comfyui_ref_dir() -> Path:
    """``$COMFYFLEET_COMFYUI_REF``, else ``<repo root>/../shared/comfyui``."""
    configured = os.environ.get("COMFYFLEET_COMFYUI_REF")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "comfyui"


def load_json(*parts: str) -> Any:
    return json.loads(comfyui_ref_dir().joinpath(*parts).read_text())


def workflow_text(name: str) -> str:
    return comfyui_ref_dir().joinpath("workflows", f"{name}.json").read_text()
