"""Where the ComfyUI reference material lives (the shared/ folder beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def comfyui_ref() -> Path:
    """``$COMFYFLEET_COMFYUI_REF``, else ``<repo>/../shared/comfyui``."""
    configured = os.environ.get("COMFYFLEET_COMFYUI_REF")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "comfyui"
