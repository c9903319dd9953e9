"""Image nodes: creation, colour, filtering, resizing."""

from __future__ import annotations

import torch

from comfyfleet.workflow.runner import NodeContext
from services.executor.native.nodes.base import NodeSet, device_of
from services.executor.native.tensors import common_upscale, filter2d, gaussian_kernel

nodes = NodeSet()


def solid_image(
    width: int, height: int, batch: int, color: int, device: torch.device
) -> torch.Tensor:
    """A ``[batch, height, width, 3]`` image of the 0xRRGGBB ``color``."""
    rgb = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
    return (
        torch.tensor(rgb, dtype=torch.float32, device=device)
        .expand(batch, height, width, 3)
        .contiguous()
    )


@nodes.node("EmptyImage")
def empty_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0
) -> tuple[torch.Tensor]:
    return (solid_image(width, height, batch_size, color, device_of(ctx)),)


@nodes.node("ImageInvert")
def image_invert(ctx: NodeContext, image: torch.Tensor) -> tuple[torch.Tensor]:
    return (1.0 - image,)


@nodes.node("ImageBlur")
def image_blur(
    ctx: NodeContext, image: torch.Tensor, blur_radius: int, sigma: float
) -> tuple[torch.Tensor]:
    if blur_radius == 0:
        return (image,)
    kernel = gaussian_kernel(blur_radius * 2 + 1, sigma, device=image.device)
    return (filter2d(image, kernel, blur_radius),)


@nodes.node("ImageSharpen")
def image_sharpen(
    ctx: NodeContext, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float
) -> tuple[torch.Tensor]:
    if sharpen_radius == 0:
        return (image,)
    size = sharpen_radius * 2 + 1
    kernel = gaussian_kernel(size, sigma, device=image.device) * -(alpha * 10)
    center = size // 2
    kernel[center, center] = kernel[center, center] - kernel.sum() + 1.0
    return (filter2d(image, kernel, sharpen_radius).clamp(0, 1),)


def resize_image(
    image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled"
) -> torch.Tensor:
    """Resize an IMAGE ``[B, H, W, C]`` (see :func:`common_upscale`)."""
    return common_upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


@nodes.node("ImageScale")
def image_scale(
    ctx: NodeContext,
    image: torch.Tensor,
    upscale_method: str,
    width: int,
    height: int,
    crop: str,
) -> tuple[torch.Tensor]:
    if width == 0 and height == 0:
        return (image,)
    old_h, old_w = image.shape[1], image.shape[2]
    if width == 0:
        width = max(1, round(old_w * height / old_h))
    elif height == 0:
        height = max(1, round(old_h * width / old_w))
    return (resize_image(image, width, height, upscale_method, crop),)


@nodes.node("ImageScaleBy")
def image_scale_by(
    ctx: NodeContext, image: torch.Tensor, upscale_method: str, scale_by: float
) -> tuple[torch.Tensor]:
    width = round(image.shape[2] * scale_by)
    height = round(image.shape[1] * scale_by)
    return (resize_image(image, width, height, upscale_method),)
