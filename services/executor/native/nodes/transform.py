"""Geometry and batching of images: crop, flip, rotate, pad, composite, stitch, batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from comfyfleet.workflow.runner import NodeContext
from services.executor.native.memory import check_allocation
from services.executor.native.nodes.base import NodeSet
from services.executor.native.tensors import common_upscale, repeat_to_batch

nodes = NodeSet()

_ROTATIONS = {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}


@nodes.node("ImageCrop")
def image_crop(
    ctx: NodeContext, image: torch.Tensor, width: int, height: int, x: int, y: int
) -> tuple[torch.Tensor]:
    x = min(x, image.shape[2] - 1)
    y = min(y, image.shape[1] - 1)
    return (image[:, y : y + height, x : x + width, :],)


@nodes.node("ImageFlip")
def image_flip(ctx: NodeContext, image: torch.Tensor, flip_method: str) -> tuple[torch.Tensor]:
    """``x-axis`` flips rows (vertically), ``y-axis`` flips columns (horizontally)."""
    return (torch.flip(image, dims=[1] if flip_method.startswith("x") else [2]),)


@nodes.node("ImageRotate")
def image_rotate(ctx: NodeContext, image: torch.Tensor, rotation: str) -> tuple[torch.Tensor]:
    """Rotate clockwise by the chosen angle."""
    return (torch.rot90(image, k=_ROTATIONS[rotation], dims=[2, 1]),)


def composite(
    destination: torch.Tensor,
    source: torch.Tensor,
    x: int,
    y: int,
    mask: torch.Tensor | None,
    multiplier: int,
    resize_source: bool,
) -> torch.Tensor:
    """Paste channels-first ``source`` into ``destination`` (in place) at ``(x, y)``.

    Coordinates are in pixels; ``multiplier`` is 8 for latents, 1 for images. ``mask``
    (``[B, H, W]`` or ``[H, W]``) is resized to the source and weights source against
    destination. The part of the source beyond the destination's edges is dropped.
    """
    source = source.to(destination.device)
    if resize_source:
        source = F.interpolate(source, size=destination.shape[2:], mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    x = max(-source.shape[3] * multiplier, min(x, destination.shape[3] * multiplier))
    y = max(-source.shape[2] * multiplier, min(y, destination.shape[2] * multiplier))
    left, top = x // multiplier, y // multiplier
    if mask is None:
        weight = torch.ones_like(source)
    else:
        weight = mask.to(destination.device, destination.dtype)
        weight = weight.reshape((-1, 1, weight.shape[-2], weight.shape[-1]))
        weight = F.interpolate(weight, size=source.shape[2:], mode="bilinear")
        weight = repeat_to_batch(weight, source.shape[0])
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    height = min(source.shape[2] - src_top, destination.shape[2] - dst_top)
    width = min(source.shape[3] - src_left, destination.shape[3] - dst_left)
    if height <= 0 or width <= 0:
        return destination
    src = source[:, :, src_top : src_top + height, src_left : src_left + width]
    w = weight[:, :, src_top : src_top + height, src_left : src_left + width]
    region = destination[:, :, dst_top : dst_top + height, dst_left : dst_left + width]
    region.copy_(w * src + (1.0 - w) * region)
    return destination


@nodes.node("ImageCompositeMasked")
def image_composite_masked(
    ctx: NodeContext,
    destination: torch.Tensor,
    source: torch.Tensor,
    x: int,
    y: int,
    resize_source: bool,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor]:
    canvas = destination.movedim(-1, 1).clone()
    out = composite(canvas, source.movedim(-1, 1), x, y, mask, 1, resize_source)
    return (out.movedim(1, -1),)


@nodes.node("ImagePadForOutpaint")
def image_pad_for_outpaint(
    ctx: NodeContext,
    image: torch.Tensor,
    left: int,
    top: int,
    right: int,
    bottom: int,
    feathering: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad with grey and return the mask of what to paint (1 outside, feathered inside)."""
    batch, height, width, channels = image.shape
    device = image.device
    check_allocation((batch, height + top + bottom, width + left + right, channels))
    canvas = torch.full(
        (batch, height + top + bottom, width + left + right, channels), 0.5, device=device
    )
    canvas[:, top : top + height, left : left + width, :] = image
    mask = torch.ones((height + top + bottom, width + left + right), device=device)
    inner = torch.zeros((height, width), device=device)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = torch.arange(height, device=device, dtype=torch.float64)[:, None]
        cols = torch.arange(width, device=device, dtype=torch.float64)[None, :]
        distances = [
            rows if top != 0 else torch.full_like(rows, height),
            (height - rows) if bottom != 0 else torch.full_like(rows, height),
            cols if left != 0 else torch.full_like(cols, width),
            (width - cols) if right != 0 else torch.full_like(cols, width),
        ]
        nearest = torch.minimum(
            torch.minimum(distances[0], distances[1]), torch.minimum(distances[2], distances[3])
        )
        ramp = ((feathering - nearest) / feathering) ** 2
        inner = torch.where(nearest < feathering, ramp, 0.0).to(torch.float32)
    mask[top : top + height, left : left + width] = inner
    return canvas, mask.unsqueeze(0)


@nodes.node("ImageBatch")
def image_batch(
    ctx: NodeContext, image1: torch.Tensor, image2: torch.Tensor
) -> tuple[torch.Tensor]:
    check_allocation((image1.shape[0] + image2.shape[0], *image1.shape[1:]), image1.dtype)
    if image1.shape[1:] != image2.shape[1:]:
        image2 = common_upscale(
            image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear", "center"
        ).movedim(1, -1)
    return (torch.cat((image1, image2.to(image1.device)), dim=0),)


@nodes.node("ImageFromBatch")
def image_from_batch(
    ctx: NodeContext, image: torch.Tensor, batch_index: int, length: int
) -> tuple[torch.Tensor]:
    batch_index = min(image.shape[0] - 1, batch_index)
    length = min(image.shape[0] - batch_index, length)
    return (image[batch_index : batch_index + length].clone(),)


@nodes.node("RepeatImageBatch")
def repeat_image_batch(ctx: NodeContext, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
    check_allocation((image.shape[0] * amount, *image.shape[1:]), image.dtype)
    return (image.repeat((amount, 1, 1, 1)),)


@nodes.node("RebatchImages", input_is_list=True)
def rebatch_images(
    ctx: NodeContext, images: list[torch.Tensor], batch_size: list[int]
) -> tuple[list[torch.Tensor]]:
    """Regroup every image of the incoming batches into batches of ``batch_size``."""
    size = batch_size[0]
    frames = [batch[i : i + 1] for batch in images for i in range(batch.shape[0])]
    groups = [torch.cat(frames[i : i + size]) for i in range(0, len(frames), size)]
    return (groups,)


_SPACING_COLORS: dict[str, tuple[float, ...]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


def _pad_to(image: torch.Tensor, size: int, axis: int, value: float) -> torch.Tensor:
    """Centre ``image`` on ``axis`` (1: height, 2: width) of length ``size``."""
    missing = size - image.shape[axis]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, before, after) if axis == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


def _with_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    missing = channels - image.shape[-1]
    if missing <= 0:
        return image
    ones = torch.ones((*image.shape[:-1], missing), device=image.device, dtype=image.dtype)
    return torch.cat([image, ones], dim=-1)


@nodes.node("ImageStitch")
def image_stitch(
    ctx: NodeContext,
    image1: torch.Tensor,
    direction: str,
    match_image_size: bool,
    spacing_width: int,
    spacing_color: str,
    image2: torch.Tensor | None = None,
) -> tuple[torch.Tensor]:
    if image2 is None:
        return (image1,)
    image2 = image2.to(image1.device)
    batch = max(image1.shape[0], image2.shape[0])
    image1, image2 = (_extend_batch(image1, batch), _extend_batch(image2, batch))
    horizontal = direction in ("left", "right")
    color = _SPACING_COLORS[spacing_color]
    if match_image_size:
        h1, w1 = image1.shape[1:3]
        aspect = image2.shape[2] / image2.shape[1]
        target = (int(h1 * aspect), h1) if horizontal else (w1, int(w1 / aspect))
        image2 = common_upscale(image2.movedim(-1, 1), *target, "lanczos", "disabled").movedim(
            1, -1
        )
    else:
        pad_value = color[0] if spacing_color in ("white", "black") else 0.0
        axis = 1 if horizontal else 2
        size = max(image1.shape[axis], image2.shape[axis])
        image1, image2 = (
            _pad_to(image1, size, axis, pad_value),
            _pad_to(image2, size, axis, pad_value),
        )
    channels = max(image1.shape[-1], image2.shape[-1])
    image1, image2 = _with_channels(image1, channels), _with_channels(image2, channels)
    parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
    if spacing_width > 0:
        parts.insert(
            1, _spacer(image1, image2, spacing_width + spacing_width % 2, horizontal, color)
        )
    axis = 2 if horizontal else 1
    joined = list(image1.shape)
    joined[axis] = sum(part.shape[axis] for part in parts)
    check_allocation(joined, image1.dtype)
    return (torch.cat(parts, dim=axis),)


def _extend_batch(image: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat the last image until the batch has ``batch`` images."""
    missing = batch - image.shape[0]
    if missing <= 0:
        return image
    check_allocation((batch, *image.shape[1:]), image.dtype)
    return torch.cat([image, image[-1:].repeat(missing, 1, 1, 1)])


def _spacer(
    image1: torch.Tensor,
    image2: torch.Tensor,
    width: int,
    horizontal: bool,
    color: tuple[float, ...],
) -> torch.Tensor:
    channels = image1.shape[-1]
    if horizontal:
        shape = (image1.shape[0], max(image1.shape[1], image2.shape[1]), width, channels)
    else:
        shape = (image1.shape[0], width, max(image1.shape[2], image2.shape[2]), channels)
    spacer = torch.zeros(shape, device=image1.device, dtype=image1.dtype)
    for index, value in enumerate(color[: min(3, channels)]):
        spacer[..., index] = value
    if channels == 4:
        spacer[..., 3] = 1.0
    return spacer
