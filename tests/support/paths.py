"""Where the ComfyUI reference material lives: ``tests/data/comfyui`` in this repository.

It is data a real ComfyUI 0.3.64 produced (its ``/object_info``, protocol traces, error
bodies and reference outputs), kept in the repository so that a clone with nothing beside
it runs every test. ``$COMFYFLEET_COMFYUI_REF`` points the tests at another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_COMFYUI_REF = REPO_ROOT / "tests" / "data" / "comfyui"


def comfyui_ref() -> Path:
    """``$COMFYFLEET_COMFYUI_REF``, else the repository's ``tests/data/comfyui``."""
    configured = os.environ.get("COMFYFLEET_COMFYUI_REF")
    return Path(configured) if configured else REPO_COMFYUI_REF
