"""Mask nodes and alpha compositing."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from comfyfleet.workflow.runner import NodeContext
from services.executor.native.memory import check_allocation
from services.executor.native.nodes.base import NodeSet, device_of
from services.executor.native.tensors import common_upscale

nodes = NodeSet()

_CHANNELS = ("red", "green", "blue", "alpha")


def as_masks(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as ``[B, H, W]`` whatever its leading dimensions."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


@nodes.node("SolidMask")
def solid_mask(ctx: NodeContext, value: float, width: int, height: int) -> tuple[torch.Tensor]:
    check_allocation((1, height, width))
    return (torch.full((1, height, width), value, dtype=torch.float32, device=device_of(ctx)),)


@nodes.node("InvertMask")
def invert_mask(ctx: NodeContext, mask: torch.Tensor) -> tuple[torch.Tensor]:
    return (1.0 - mask,)


@nodes.node("ThresholdMask")
def threshold_mask(ctx: NodeContext, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
    return ((mask > value).float(),)


@nodes.node("ImageToMask")
def image_to_mask(ctx: NodeContext, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
    return (image[:, :, :, _CHANNELS.index(channel)],)


@nodes.node("ImageColorToMask")
def image_color_to_mask(ctx: NodeContext, image: torch.Tensor, color: int) -> tuple[torch.Tensor]:
    """1 where the 8-bit (rounded) pixel equals the 0xRRGGBB ``color``."""
    rgb = (image.clamp(0, 1.0) * 255.0).round().to(torch.int)
    packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
    return ((packed == color).float(),)


@nodes.node("MaskToImage")
def mask_to_image(ctx: NodeContext, mask: torch.Tensor) -> tuple[torch.Tensor]:
    planes = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1)
    return (planes.expand(-1, -1, -1, 3),)


@nodes.node("CropMask")
def crop_mask(
    ctx: NodeContext, mask: torch.Tensor, x: int, y: int, width: int, height: int
) -> tuple[torch.Tensor]:
    return (as_masks(mask)[:, y : y + height, x : x + width],)


def _feather_edge(mask: torch.Tensor, size: int, dim: int, from_end: bool) -> None:
    """Scale the first (or last) ``size`` lines along ``dim`` by ``(i + 1) / size``.

    Like ComfyUI, the ramp from the end is indexed ``-i``: its first step lands on line 0.
    """
    for i in range(size):
        index = -i if from_end else i
        mask.select(dim, index).mul_((i + 1) / size)


@nodes.node("FeatherMask")
def feather_mask(
    ctx: NodeContext, mask: torch.Tensor, left: int, top: int, right: int, bottom: int
) -> tuple[torch.Tensor]:
    out = as_masks(mask).clone()
    height, width = out.shape[-2], out.shape[-1]
    _feather_edge(out, min(left, width), 2, from_end=False)
    _feather_edge(out, min(right, width), 2, from_end=True)
    _feather_edge(out, min(top, height), 1, from_end=False)
    _feather_edge(out, min(bottom, height), 1, from_end=True)
    return (out,)


def _morph_step(masks: torch.Tensor, tapered: bool, grow: bool) -> torch.Tensor:
    """One 3x3 dilation (``grow``) or erosion; edges repeat the border pixels."""
    padded = F.pad(masks.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    height, width = masks.shape[-2], masks.shape[-1]
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        torch.maximum if grow else torch.minimum
    )
    out = masks
    for dy in range(3):
        for dx in range(3):
            if tapered and dy != 1 and dx != 1:
                continue
            out = reduce(out, padded[:, dy : dy + height, dx : dx + width])
    return out


@nodes.node("GrowMask")
def grow_mask(
    ctx: NodeContext, mask: torch.Tensor, expand: int, tapered_corners: bool
) -> tuple[torch.Tensor]:
    out = as_masks(mask)
    for _ in range(abs(expand)):
        ctx.check_cancelled()
        out = _morph_step(out, tapered_corners, grow=expand > 0)
    return (out.clone() if out is mask else out,)


_MASK_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "multiply": lambda d, s: d * s,
    "add": lambda d, s: d + s,
    "subtract": lambda d, s: d - s,
    "and": lambda d, s: torch.bitwise_and(d.round().bool(), s.round().bool()).float(),
    "or": lambda d, s: torch.bitwise_or(d.round().bool(), s.round().bool()).float(),
    "xor": lambda d, s: torch.bitwise_xor(d.round().bool(), s.round().bool()).float(),
}


@nodes.node("MaskComposite")
def mask_composite(
    ctx: NodeContext,
    destination: torch.Tensor,
    source: torch.Tensor,
    x: int,
    y: int,
    operation: str,
) -> tuple[torch.Tensor]:
    out = as_masks(destination).clone()
    src = as_masks(source).to(out.device)
    right = min(x + src.shape[-1], out.shape[-1])
    bottom = min(y + src.shape[-2], out.shape[-2])
    if right > x and bottom > y:
        region = out[:, y:bottom, x:right]
        part = src[:, : bottom - y, : right - x]
        out[:, y:bottom, x:right] = _MASK_OPS[operation](region, part)
    return (out.clamp(0.0, 1.0),)


def _resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    planes = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    check_allocation((planes.shape[0], height, width), planes.dtype)
    return F.interpolate(planes, size=(height, width), mode="bilinear").squeeze(1)


@nodes.node("JoinImageWithAlpha")
def join_image_with_alpha(
    ctx: NodeContext, image: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor]:
    """RGBA images whose alpha is ``1 - mask``."""
    count = min(len(image), len(alpha))
    opacity = 1.0 - _resize_mask(alpha.to(image.device), image.shape[1], image.shape[2])
    rgba = torch.cat((image[:count, :, :, :3], opacity[:count].unsqueeze(-1)), dim=-1)
    return (rgba,)


@nodes.node("SplitImageWithAlpha")
def split_image_with_alpha(
    ctx: NodeContext, image: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = image[..., :3]
    alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
    return rgb, 1.0 - alpha


def _porter_duff(
    mode: str, src: torch.Tensor, sa: torch.Tensor, dst: torch.Tensor, da: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Porter-Duff operator on premultiplied colours; returns (colour, alpha)."""
    union = sa + da - sa * da
    table: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {
        "ADD": lambda: ((src + dst).clamp(0, 1), (sa + da).clamp(0, 1)),
        "CLEAR": lambda: (torch.zeros_like(dst), torch.zeros_like(da)),
        "DARKEN": lambda: ((1 - da) * src + (1 - sa) * dst + torch.min(src, dst), union),
        "DST": lambda: (dst, da),
        "DST_ATOP": lambda: (sa * dst + (1 - da) * src, sa),
        "DST_IN": lambda: (dst * sa, sa * da),
        "DST_OUT": lambda: ((1 - sa) * dst, (1 - sa) * da),
        "DST_OVER": lambda: (dst + (1 - da) * src, da + (1 - da) * sa),
        "LIGHTEN": lambda: ((1 - da) * src + (1 - sa) * dst + torch.max(src, dst), union),
        "MULTIPLY": lambda: (src * dst, sa * da),
        "OVERLAY": lambda: (
            torch.where(2 * dst < da, 2 * src * dst, sa * da - 2 * (da - src) * (sa - dst)),
            union,
        ),
        "SCREEN": lambda: (src + dst - src * dst, union),
        "SRC": lambda: (src, sa),
        "SRC_ATOP": lambda: (da * src + (1 - sa) * dst, da),
        "SRC_IN": lambda: (src * da, sa * da),
        "SRC_OUT": lambda: ((1 - da) * src, (1 - da) * sa),
        "SRC_OVER": lambda: (src + (1 - sa) * dst, sa + (1 - sa) * da),
        "XOR": lambda: ((1 - da) * src + (1 - sa) * dst, (1 - da) * sa + (1 - sa) * da),
    }
    return table[mode]()


def _fit(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize an ``[H, W, C]`` tensor to ``height x width`` (bicubic, centre crop)."""
    if tensor.shape[:2] == (height, width):
        return tensor
    chw = tensor.permute(2, 0, 1).unsqueeze(0)
    return common_upscale(chw, width, height, "bicubic", "center").squeeze(0).permute(1, 2, 0)


@nodes.node("PorterDuffImageComposite")
def porter_duff_image_composite(
    ctx: NodeContext,
    source: torch.Tensor,
    source_alpha: torch.Tensor,
    destination: torch.Tensor,
    destination_alpha: torch.Tensor,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    count = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
    images, masks = [], []
    for i in range(count):
        ctx.check_cancelled()
        dst = destination[i]
        height, width = dst.shape[0], dst.shape[1]
        if source[i].shape[-1] != dst.shape[-1]:
            raise ValueError("source and destination need the same number of channels")
        src = _fit(source[i].to(dst.device), height, width)
        da = _fit(destination_alpha[i].unsqueeze(-1).to(dst.device), height, width)
        sa = _fit(source_alpha[i].unsqueeze(-1).to(dst.device), height, width)
        sa, da = 1 - sa, 1 - da
        colour, alpha = _porter_duff(mode, src * sa, sa, dst * da, da)
        colour = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour)).clamp(0, 1)
        images.append(colour)
        masks.append((1 - alpha).squeeze(-1))
    return torch.stack(images), torch.stack(masks)
