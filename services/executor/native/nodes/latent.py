"""Latent nodes. A LATENT is a dict: ``samples`` ``[B, C, H/8, W/8]`` plus optional
``noise_mask`` and ``batch_index``; nodes copy the dict and replace what they change."""

from __future__ import annotations

import math
from typing import Any

import torch

from comfyfleet.workflow.runner import NodeContext
from services.executor.native.memory import check_allocation
from services.executor.native.nodes.base import NodeSet, device_of
from services.executor.native.nodes.transform import composite
from services.executor.native.tensors import common_upscale, repeat_to_batch

nodes = NodeSet()

Latent = dict[str, Any]

_ROTATIONS = {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}


def _with(latent: Latent, **changes: Any) -> tuple[Latent]:
    return ({**latent, **changes},)


def _empty(ctx: NodeContext, width: int, height: int, batch: int, channels: int) -> Latent:
    shape = (batch, channels, height // 8, width // 8)
    check_allocation(shape)
    return {"samples": torch.zeros(shape, device=device_of(ctx))}


@nodes.node("EmptyLatentImage")
def empty_latent_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1
) -> tuple[Latent]:
    return (_empty(ctx, width, height, batch_size, 4),)


@nodes.node("EmptySD3LatentImage")
def empty_sd3_latent_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1
) -> tuple[Latent]:
    return (_empty(ctx, width, height, batch_size, 16),)


@nodes.node("LatentUpscale")
def latent_upscale(
    ctx: NodeContext,
    samples: Latent,
    upscale_method: str,
    width: int,
    height: int,
    crop: str,
) -> tuple[Latent]:
    """Resize to ``width x height`` pixels (at least 64; a 0 keeps the aspect ratio)."""
    if width == 0 and height == 0:
        return (samples,)
    tensor = samples["samples"]
    if width == 0:
        height = max(64, height)
        width = max(64, round(tensor.shape[-1] * height / tensor.shape[-2]))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(tensor.shape[-2] * width / tensor.shape[-1]))
    else:
        width, height = max(64, width), max(64, height)
    resized = common_upscale(tensor, width // 8, height // 8, upscale_method, crop)
    return _with(samples, samples=resized)


@nodes.node("LatentUpscaleBy")
def latent_upscale_by(
    ctx: NodeContext, samples: Latent, upscale_method: str, scale_by: float
) -> tuple[Latent]:
    tensor = samples["samples"]
    width = round(tensor.shape[-1] * scale_by)
    height = round(tensor.shape[-2] * scale_by)
    return _with(samples, samples=common_upscale(tensor, width, height, upscale_method, "disabled"))


@nodes.node("LatentFlip")
def latent_flip(ctx: NodeContext, samples: Latent, flip_method: str) -> tuple[Latent]:
    dims = [2] if flip_method.startswith("x") else [3]
    return _with(samples, samples=torch.flip(samples["samples"], dims=dims))


@nodes.node("LatentRotate")
def latent_rotate(ctx: NodeContext, samples: Latent, rotation: str) -> tuple[Latent]:
    rotated = torch.rot90(samples["samples"], k=_ROTATIONS[rotation], dims=[3, 2])
    return _with(samples, samples=rotated)


@nodes.node("LatentCrop")
def latent_crop(
    ctx: NodeContext, samples: Latent, width: int, height: int, x: int, y: int
) -> tuple[Latent]:
    tensor = samples["samples"]
    x = min(x // 8, tensor.shape[3] - 8)
    y = min(y // 8, tensor.shape[2] - 8)
    cropped = tensor[:, :, y : y + height // 8, x : x + width // 8]
    return _with(samples, samples=cropped)


def _feather_weights(
    shape: torch.Size, feather: int, edges: tuple[bool, bool, bool, bool], device: torch.device
) -> torch.Tensor:
    """Ramp weights on the (top, bottom, left, right) edges that lie inside the target."""
    weights = torch.ones(shape, device=device)
    top, bottom, left, right = edges
    for t in range(feather):
        rate = (1.0 / feather) * (t + 1)
        if top:
            weights[:, :, t, :] *= rate
        if bottom:
            weights[:, :, weights.shape[2] - 1 - t, :] *= rate
        if left:
            weights[:, :, :, t] *= rate
        if right:
            weights[:, :, :, weights.shape[3] - 1 - t] *= rate
    return weights


@nodes.node("LatentComposite")
def latent_composite(
    ctx: NodeContext,
    samples_to: Latent,
    samples_from: Latent,
    x: int,
    y: int,
    feather: int,
) -> tuple[Latent]:
    x, y, feather = x // 8, y // 8, feather // 8
    target = samples_to["samples"]
    out = target.clone()
    source = samples_from["samples"][:, :, : target.shape[2] - y, : target.shape[3] - x]
    source = source.to(out.device)
    region = out[:, :, y : y + source.shape[2], x : x + source.shape[3]]
    if feather == 0:
        region.copy_(source)
    else:
        edges = (
            y != 0,
            y + source.shape[2] < target.shape[2],
            x != 0,
            x + source.shape[3] < target.shape[3],
        )
        weights = _feather_weights(source.shape, feather, edges, out.device)
        region.copy_(source * weights + region * (1.0 - weights))
    return _with(samples_to, samples=out)


@nodes.node("LatentCompositeMasked")
def latent_composite_masked(
    ctx: NodeContext,
    destination: Latent,
    source: Latent,
    x: int,
    y: int,
    resize_source: bool,
    mask: torch.Tensor | None = None,
) -> tuple[Latent]:
    canvas = destination["samples"].clone()
    out = composite(canvas, source["samples"], x, y, mask, 8, resize_source)
    return _with(destination, samples=out)


def reshape_like(target: torch.Tensor, latent: torch.Tensor, repeat: bool = True) -> torch.Tensor:
    """Resize ``latent`` to ``target``'s size (bilinear, centre crop) and batch size."""
    latent = latent.to(target.device)
    if latent.shape[1:] != target.shape[1:]:
        latent = common_upscale(latent, target.shape[-1], target.shape[-2], "bilinear", "center")
    return repeat_to_batch(latent, target.shape[0]) if repeat else latent


@nodes.node("LatentAdd")
def latent_add(ctx: NodeContext, samples1: Latent, samples2: Latent) -> tuple[Latent]:
    s1 = samples1["samples"]
    return _with(samples1, samples=s1 + reshape_like(s1, samples2["samples"]))


@nodes.node("LatentSubtract")
def latent_subtract(ctx: NodeContext, samples1: Latent, samples2: Latent) -> tuple[Latent]:
    s1 = samples1["samples"]
    return _with(samples1, samples=s1 - reshape_like(s1, samples2["samples"]))


@nodes.node("LatentMultiply")
def latent_multiply(ctx: NodeContext, samples: Latent, multiplier: float) -> tuple[Latent]:
    return _with(samples, samples=samples["samples"] * multiplier)


@nodes.node("LatentInterpolate")
def latent_interpolate(
    ctx: NodeContext, samples1: Latent, samples2: Latent, ratio: float
) -> tuple[Latent]:
    """Interpolate directions and magnitudes of the channel vectors separately."""
    s1 = samples1["samples"]
    s2 = reshape_like(s1, samples2["samples"])
    m1 = torch.linalg.vector_norm(s1, dim=1, keepdim=True)
    m2 = torch.linalg.vector_norm(s2, dim=1, keepdim=True)
    mixed = torch.nan_to_num(s1 / m1) * ratio + torch.nan_to_num(s2 / m2) * (1.0 - ratio)
    direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
    return _with(samples1, samples=direction * (m1 * ratio + m2 * (1.0 - ratio)))


@nodes.node("LatentBlend")
def latent_blend(
    ctx: NodeContext, samples1: Latent, samples2: Latent, blend_factor: float
) -> tuple[Latent]:
    s1 = samples1["samples"]
    s2 = samples2["samples"].to(s1.device)
    if s1.shape != s2.shape:
        s2 = common_upscale(s2, s1.shape[3], s1.shape[2], "bicubic", "center")
    return _with(samples1, samples=s1 * blend_factor + s2 * (1 - blend_factor))


_CONCAT_DIMS = {"x": -1, "y": -2, "t": -3}


@nodes.node("LatentConcat")
def latent_concat(ctx: NodeContext, samples1: Latent, samples2: Latent, dim: str) -> tuple[Latent]:
    s1 = samples1["samples"]
    s2 = repeat_to_batch(samples2["samples"].to(s1.device), s1.shape[0])
    parts = [s2, s1] if dim.startswith("-") else [s1, s2]
    axis = _CONCAT_DIMS[dim.lstrip("-")]
    joined = list(s1.shape)
    joined[axis] += s2.shape[axis]
    check_allocation(joined, s1.dtype)
    return _with(samples1, samples=torch.cat(parts, dim=axis))


@nodes.node("LatentCut")
def latent_cut(
    ctx: NodeContext, samples: Latent, dim: str, index: int, amount: int
) -> tuple[Latent]:
    tensor = samples["samples"]
    axis = tensor.ndim + _CONCAT_DIMS[dim]
    length = tensor.shape[axis]
    if index >= 0:
        index = min(index, length - 1)
        amount = min(length - index, amount)
    else:
        index = max(index, -length)
        amount = min(-index, amount)
    return _with(samples, samples=torch.narrow(tensor, axis, index, amount))


def _batch_indexes(latent: Latent, size: int) -> list[int]:
    return list(latent.get("batch_index", range(size)))


@nodes.node("LatentBatch")
def latent_batch(ctx: NodeContext, samples1: Latent, samples2: Latent) -> tuple[Latent]:
    s1 = samples1["samples"]
    s2 = reshape_like(s1, samples2["samples"], repeat=False)
    check_allocation((s1.shape[0] + s2.shape[0], *s1.shape[1:]), s1.dtype)
    indexes = _batch_indexes(samples1, s1.shape[0]) + _batch_indexes(samples2, s2.shape[0])
    return _with(samples1, samples=torch.cat((s1, s2)), batch_index=indexes)


def _masks_for(latent: Latent, size: int) -> torch.Tensor | None:
    """The noise masks repeated to ``size`` entries (``None`` without a mask)."""
    masks = latent.get("noise_mask")
    if masks is None:
        return None
    if masks.shape[0] < size:
        masks = masks.repeat(math.ceil(size / masks.shape[0]), 1, 1, 1)[:size]
    return masks


@nodes.node("LatentFromBatch")
def latent_from_batch(
    ctx: NodeContext, samples: Latent, batch_index: int, length: int
) -> tuple[Latent]:
    tensor = samples["samples"]
    start = min(tensor.shape[0] - 1, batch_index)
    length = min(tensor.shape[0] - start, length)
    out: Latent = {**samples, "samples": tensor[start : start + length].clone()}
    masks = samples.get("noise_mask")
    if masks is not None:
        if masks.shape[0] == 1:
            out["noise_mask"] = masks.clone()
        else:
            repeated = _masks_for(samples, tensor.shape[0])
            assert repeated is not None
            out["noise_mask"] = repeated[start : start + length].clone()
    if "batch_index" in samples:
        out["batch_index"] = samples["batch_index"][start : start + length]
    else:
        out["batch_index"] = list(range(start, start + length))
    return (out,)


@nodes.node("RepeatLatentBatch")
def repeat_latent_batch(ctx: NodeContext, samples: Latent, amount: int) -> tuple[Latent]:
    tensor = samples["samples"]
    check_allocation((tensor.shape[0] * amount, *tensor.shape[1:]), tensor.dtype)
    out: Latent = {**samples, "samples": samples["samples"].repeat((amount, 1, 1, 1))}
    masks = samples.get("noise_mask")
    if masks is not None and masks.shape[0] > 1:
        out["noise_mask"] = masks.repeat((amount, 1, 1, 1))
    if "batch_index" in out:
        indexes = list(out["batch_index"])
        offset = max(indexes) - min(indexes) + 1
        out["batch_index"] = indexes + [x + i * offset for i in range(1, amount) for x in indexes]
    return (out,)


@nodes.node("LatentBatchSeedBehavior")
def latent_batch_seed_behavior(
    ctx: NodeContext, samples: Latent, seed_behavior: str
) -> tuple[Latent]:
    out = dict(samples)
    if seed_behavior == "random":
        out.pop("batch_index", None)
    else:
        first = out.get("batch_index", [0])[0]
        out["batch_index"] = [first] * samples["samples"].shape[0]
    return (out,)


@nodes.node("SetLatentNoiseMask")
def set_latent_noise_mask(ctx: NodeContext, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
    return _with(samples, noise_mask=mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])))


def _pixel_masks(latent: Latent) -> torch.Tensor:
    """The latent's noise masks at pixel size and batch size (ones when it has none)."""
    tensor = latent["samples"]
    batch, height, width = tensor.shape[0], tensor.shape[2] * 8, tensor.shape[3] * 8
    check_allocation((batch, 1, height, width))
    masks = latent.get("noise_mask")
    if masks is None:
        return torch.ones((batch, 1, height, width), device=tensor.device)
    masks = masks.reshape((-1, 1, masks.shape[-2], masks.shape[-1])).to(tensor.device)
    if masks.shape[-2:] != (height, width):
        masks = torch.nn.functional.interpolate(masks, size=(height, width), mode="bilinear")
    return repeat_to_batch(masks, batch)


@nodes.node("RebatchLatents", input_is_list=True)
def rebatch_latents(
    ctx: NodeContext, latents: list[Latent], batch_size: list[int]
) -> tuple[list[Latent]]:
    """Regroup latents into batches of ``batch_size``; latents of different sizes are never
    mixed. Masks that are all ones are dropped."""
    size = batch_size[0]
    groups: list[list[tuple[torch.Tensor, torch.Tensor, list[int]]]] = []
    offset = 0
    for latent in latents:
        tensor = latent["samples"]
        indexes = list(latent.get("batch_index", range(offset, offset + tensor.shape[0])))
        offset += len(indexes)
        entry = (tensor, _pixel_masks(latent), indexes)
        if groups and groups[-1][0][0].shape[-2:] == tensor.shape[-2:]:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    out: list[Latent] = []
    for group in groups:
        samples = torch.cat([g[0] for g in group])
        masks = torch.cat([g[1] for g in group])
        indexes = [i for g in group for i in g[2]]
        for start in range(0, samples.shape[0], size):
            piece: Latent = {
                "samples": samples[start : start + size],
                "batch_index": indexes[start : start + size],
            }
            mask = masks[start : start + size]
            if mask.mean() != 1.0:
                piece["noise_mask"] = mask
            out.append(piece)
    return (out,)
