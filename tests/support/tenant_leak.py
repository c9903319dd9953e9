"""Issue 11's cross-tenant leak as data: tenant A's graph holds a secret, tenant B's graph is
A's minus the secret, and an output PNG tells whose prompt it embeds.

Only ComfyUI's core nodes (no checkpoint), so the same graphs run on the native engine, the
real ComfyUI and through the platform.
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

SECRET = "TENANT-A-SECRET"
PRIVATE_TITLE = "tenant A's private title"
# EmptyImage's colour in both graphs: the node both tenants share.
COLOR = 0x3399FF


def _image_nodes(color: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "ComfyUI"},
        },
    }


def tenant_a_workflow(color: int = COLOR) -> dict[str, Any]:
    """A's graph: B's, plus a node that feeds nothing and holds a secret and a private title."""
    return {
        "99": {
            "class_type": "PrimitiveString",
            "inputs": {"value": SECRET},
            "_meta": {"title": PRIVATE_TITLE},
        },
        **_image_nodes(color),
    }


def tenant_b_workflow(color: int = COLOR) -> dict[str, Any]:
    return _image_nodes(color)


def png_prompt(png: bytes) -> dict[str, Any]:
    """The prompt an output PNG embeds (its ``prompt`` text chunk)."""
    text = Image.open(io.BytesIO(png)).info.get("prompt")
    assert isinstance(text, str), "the PNG embeds no prompt"
    prompt: dict[str, Any] = json.loads(text)
    return prompt


def assert_no_trace_of_a(data: bytes) -> None:
    """Nothing of tenant A's graph is in ``data`` (a file B received)."""
    assert SECRET.encode() not in data
    assert PRIVATE_TITLE.encode() not in data
