"""Which device the engine tests run on."""

from __future__ import annotations

import os


def native_device() -> str:
    """``$COMFYFLEET_NATIVE_DEVICE`` (``cuda``, ``auto`` ...), CPU by default."""
    return os.environ.get("COMFYFLEET_NATIVE_DEVICE", "cpu")
