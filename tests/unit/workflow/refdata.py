"""Reading the captured ComfyUI reference material (see :mod:`tests.support.paths`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.paths import comfyui_ref


def comfyui_ref_dir() -> Path:
    return comfyui_ref()


def load_json(*parts: str) -> Any:
    return json.loads(comfyui_ref_dir().joinpath(*parts).read_text())


def workflow_text(name: str) -> str:
    return comfyui_ref_dir().joinpath("workflows", f"{name}.json").read_text()
