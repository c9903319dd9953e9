"""comfyfleet's own custom node package for tests: a ComfyUI loads it from custom_nodes/.

Two small nodes with known results: a solid colour image, and an inversion.
"""

from __future__ import annotations

from typing import Any

import torch


class ComfyfleetSolid:
    """An image of one colour (0xRRGGBB), as ComfyUI's IMAGE: [batch, height, width, 3]."""

    CATEGORY = "comfyfleet/test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 8, "min": 1, "max": 512}
        return {
            "required": {
                "width": ("INT", size),
                "height": ("INT", size),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF}),
            }
        }

    def make(self, width: int, height: int, color: int) -> tuple[torch.Tensor]:
        rgb = torch.tensor([(color >> 16) & 255, (color >> 8) & 255, color & 255]) / 255.0
        return (rgb.expand(1, height, width, 3).clone(),)


class ComfyfleetInvert:
    """Every channel value v becomes 1 - v."""

    CATEGORY = "comfyfleet/test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


NODE_CLASS_MAPPINGS = {"ComfyfleetSolid": ComfyfleetSolid, "ComfyfleetInvert": ComfyfleetInvert}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ComfyfleetSolid": "Solid colour (comfyfleet test)",
    "ComfyfleetInvert": "Invert (comfyfleet test)",
}
