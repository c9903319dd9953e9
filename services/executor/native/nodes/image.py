"""Image nodes: creation, colour, filtering, resizing."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from comfyfleet.workflow.runner import NodeContext
from services.executor.native.memory import check_allocation
from services.executor.native.nodes.base import NodeSet, device_of
from services.executor.native.tensors import (
    common_upscale,
    filter2d,
    from_uint8,
    gaussian_kernel,
)

nodes = NodeSet()


def solid_image(
    width: int, height: int, batch: int, color: int, device: torch.device
) -> torch.Tensor:
    """A ``[batch, height, width, 3]`` image of the 0xRRGGBB ``color``."""
    check_allocation((batch, height, width, 3))
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


@nodes.node("ImageScaleToTotalPixels")
def image_scale_to_total_pixels(
    ctx: NodeContext, image: torch.Tensor, upscale_method: str, megapixels: float
) -> tuple[torch.Tensor]:
    """Scale to about ``megapixels`` (of 1024 x 1024 pixels), keeping the aspect ratio."""
    height, width = image.shape[1], image.shape[2]
    scale = math.sqrt(int(megapixels * 1024 * 1024) / (width * height))
    return (resize_image(image, round(width * scale), round(height * scale), upscale_method),)


@nodes.node("ImageScaleToMaxDimension")
def image_scale_to_max_dimension(
    ctx: NodeContext, image: torch.Tensor, upscale_method: str, largest_size: int
) -> tuple[torch.Tensor]:
    height, width = image.shape[1], image.shape[2]
    if height > width:
        width, height = round((width / height) * largest_size), largest_size
    elif width > height:
        width, height = largest_size, round((height / width) * largest_size)
    else:
        width = height = largest_size
    return (resize_image(image, width, height, upscale_method),)


@nodes.node("ResizeAndPadImage")
def resize_and_pad_image(
    ctx: NodeContext,
    image: torch.Tensor,
    target_width: int,
    target_height: int,
    padding_color: str,
    interpolation: str,
) -> tuple[torch.Tensor]:
    """Fit inside the target keeping the aspect ratio, centred on a white or black canvas."""
    batch, height, width, channels = image.shape
    scale = min(target_width / width, target_height / height)
    new_width, new_height = int(width * scale), int(height * scale)
    resized = resize_image(image, new_width, new_height, interpolation)
    fill = 0.0 if padding_color == "black" else 1.0
    check_allocation((batch, target_height, target_width, channels), image.dtype)
    canvas = torch.full(
        (batch, target_height, target_width, channels), fill, dtype=image.dtype, device=image.device
    )
    top, left = (target_height - new_height) // 2, (target_width - new_width) // 2
    canvas[:, top : top + new_height, left : left + new_width, :] = resized
    return (canvas,)


@nodes.node("GetImageSize")
def get_image_size(ctx: NodeContext, image: torch.Tensor) -> tuple[int, int, int]:
    return image.shape[2], image.shape[1], image.shape[0]


def _soft_light_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


_BLEND_MODES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "overlay": lambda a, b: torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
    "soft_light": lambda a, b: torch.where(
        b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (_soft_light_g(a) - a)
    ),
    "difference": lambda a, b: a - b,
}


@nodes.node("ImageBlend")
def image_blend(
    ctx: NodeContext,
    image1: torch.Tensor,
    image2: torch.Tensor,
    blend_factor: float,
    blend_mode: str,
) -> tuple[torch.Tensor]:
    image2 = image2.to(image1.device)
    if image1.shape != image2.shape:
        image2 = resize_image(image2, image1.shape[2], image1.shape[1], "bicubic", "center")
    blended = _BLEND_MODES[blend_mode](image1, image2)
    return ((image1 * (1 - blend_factor) + blended * blend_factor).clamp(0, 1),)


@nodes.node("ImageAddNoise")
def image_add_noise(
    ctx: NodeContext, image: torch.Tensor, seed: int, strength: float
) -> tuple[torch.Tensor]:
    """Add gaussian noise drawn on the CPU from ``seed`` (reproducible across devices)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
    return ((image + strength * noise).clamp(0.0, 1.0),)


def _bayer_matrix(level: int) -> np.ndarray:
    """The normalised ``2**level`` square Bayer threshold matrix (centred on 0)."""
    if level == 0:
        return np.zeros((1, 1), dtype=np.float32)
    q = 4**level
    m = q * _bayer_matrix(level - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


def _bayer_dither(image: Image.Image, palette: Image.Image, order: int) -> Image.Image:
    colours = len(palette.getpalette() or []) // 3
    spread = 2 * 256 / colours
    matrix = torch.from_numpy(spread * _bayer_matrix(int(math.log2(order))) + 0.5)
    pixels = torch.from_numpy(np.asarray(image).astype(np.float32))
    reps = (
        math.ceil(pixels.shape[0] / matrix.shape[0]),
        math.ceil(pixels.shape[1] / matrix.shape[1]),
    )
    tiled = matrix.tile(reps)[: pixels.shape[0], : pixels.shape[1]].unsqueeze(-1)
    shifted = (pixels + tiled).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(shifted.numpy()).quantize(palette=palette, dither=Image.Dither.NONE)


@nodes.node("ImageQuantize")
def image_quantize(
    ctx: NodeContext, image: torch.Tensor, colors: int, dither: str
) -> tuple[torch.Tensor]:
    """Reduce each image to an adaptive palette of ``colors`` colours (Pillow)."""
    frames = (image * 255).to(torch.uint8).cpu().numpy()
    out = []
    for frame in frames:
        ctx.check_cancelled()
        picture = Image.fromarray(frame[..., :3], mode="RGB")
        palette = picture.quantize(colors=colors)
        if dither.startswith("bayer"):
            quantized = _bayer_dither(picture, palette, int(dither.split("-")[-1]))
        else:
            method = (
                Image.Dither.FLOYDSTEINBERG if dither == "floyd-steinberg" else Image.Dither.NONE
            )
            quantized = picture.quantize(palette=palette, dither=method)
        out.append(from_uint8(np.asarray(quantized.convert("RGB"))))
    return (torch.stack(out).to(image.device),)


def _window_max(image: torch.Tensor, size: int, sign: float) -> torch.Tensor:
    """Max (``sign=1``) or min (``sign=-1``) over a ``size`` square window of channels-first
    images; pixels outside the image are ignored (geodesic border)."""
    before = size // 2
    after = size - before - 1
    padded = F.pad(sign * image, (before, after, before, after), value=-math.inf)
    return sign * F.max_pool2d(padded, size, stride=1)


def _morphology(image: torch.Tensor, operation: str, size: int) -> torch.Tensor:
    def dilate(x: torch.Tensor) -> torch.Tensor:
        return _window_max(x, size, 1.0)

    def erode(x: torch.Tensor) -> torch.Tensor:
        return _window_max(x, size, -1.0)

    if operation == "erode":
        return erode(image)
    if operation == "dilate":
        return dilate(image)
    if operation == "open":
        return dilate(erode(image))
    if operation == "close":
        return erode(dilate(image))
    if operation == "gradient":
        return dilate(image) - erode(image)
    if operation == "top_hat":
        return image - dilate(erode(image))
    if operation == "bottom_hat":
        return erode(dilate(image)) - image
    raise ValueError(
        f"Invalid operation {operation} for morphology. Must be one of 'erode', "
        "'dilate', 'open', 'close', 'gradient', 'tophat', 'bottomhat'"
    )


@nodes.node("Morphology")
def morphology(
    ctx: NodeContext, image: torch.Tensor, operation: str, kernel_size: int
) -> tuple[torch.Tensor]:
    out = _morphology(image.movedim(-1, 1), operation, kernel_size)
    return (out.movedim(1, -1),)


def _sobel(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised Sobel gradients (x, y) of ``[B, 1, H, W]`` with replicated borders."""
    kx = (
        torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gray.device)
        / 8.0
    )
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)
    grads = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads[:, :1], grads[:, 1:]


_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved so that each pixel sees its ``(dy, dx)`` neighbour (zero outside)."""
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2], x.shape[-1]
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def canny_edges(ctx: NodeContext, image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges of channels-first RGB images, as ``[B, 1, H, W]`` in {0, 1}."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=image.device).view(1, 3, 1, 1)
    gray = (image[:, :3] * weights).sum(dim=1, keepdim=True)
    kernel = _gaussian_1d(5, 1.0, image.device)
    blurred = F.conv2d(F.pad(gray, (2, 2, 0, 0), mode="reflect"), kernel.view(1, 1, 1, 5))
    blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="reflect"), kernel.view(1, 1, 5, 1))
    gx, gy = _sobel(blurred)
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-6)
    angle = torch.rad2deg(torch.atan2(gy, gx))
    sector = (torch.round(angle / 45.0) % 8).long()
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for index, (dy, dx) in enumerate(_NEIGHBOURS):
        ahead = _shift(magnitude, dy, dx)
        behind = _shift(magnitude, -dy, -dx)
        local_max = (magnitude > ahead) & (magnitude > behind)
        keep |= (sector == index) & local_max
    thin = magnitude * keep
    strong = thin > high
    weak = (thin > low) & ~strong
    edges = strong.float()
    while True:
        ctx.check_cancelled()
        grown = _dilate3(edges)
        updated = torch.where(weak & (grown > 0), 1.0, edges)
        if torch.equal(updated, edges):
            return edges
        edges = updated


def _dilate3(x: torch.Tensor) -> torch.Tensor:
    """3x3 maximum of non-negative maps (cheaper than ``max_pool2d`` on CPU)."""
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2], x.shape[-1]
    rows = torch.maximum(
        torch.maximum(padded[..., :, :w], padded[..., :, 1 : w + 1]), padded[..., :, 2:]
    )
    return torch.maximum(torch.maximum(rows[..., :h, :], rows[..., 1 : h + 1, :]), rows[..., 2:, :])


def _gaussian_1d(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


@nodes.node("Canny")
def canny(
    ctx: NodeContext, image: torch.Tensor, low_threshold: float, high_threshold: float
) -> tuple[torch.Tensor]:
    edges = canny_edges(ctx, image.movedim(-1, 1), low_threshold, high_threshold)
    return (edges.repeat(1, 3, 1, 1).movedim(1, -1),)
