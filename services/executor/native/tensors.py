"""Tensor helpers shared by the native nodes (resizing, kernels, 8-bit conversion).

Layouts: IMAGE ``[B, H, W, C]`` floats in 0..1, MASK ``[B, H, W]``, latent samples
``[B, C, H, W]``. Resizing works on channels-first tensors ``[B, C, H, W]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from services.executor.native.memory import check_allocation

IMAGE_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")


def center_crop_for(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop ``samples`` (``[..., H, W]``) to the aspect ratio of ``width x height``."""
    old_width = samples.shape[-1]
    old_height = samples.shape[-2]
    old_aspect = old_width / old_height
    new_aspect = width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos resize through Pillow, on 8-bit pixels (as ComfyUI does)."""
    frames = []
    pixels = (samples.movedim(1, -1) * 255.0).clamp(0, 255).to(torch.uint8).cpu().numpy()
    for frame in pixels:
        image = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)
        resized = np.asarray(image.resize((width, height), resample=Image.Resampling.LANCZOS))
        if resized.ndim == 2:
            resized = resized[..., None]
        frames.append(torch.from_numpy(resized.astype(np.float32) / 255.0).movedim(-1, 0))
    return torch.stack(frames).to(samples.device, samples.dtype)


def slerp_rows(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the rows of ``a`` and ``b`` (``[N, C]``) by ``t``
    (``[N, 1]``); the magnitude is interpolated linearly. Nearly parallel rows give ``a``,
    nearly opposite rows fall back to linear interpolation."""
    norm_a = a.norm(dim=-1, keepdim=True)
    norm_b = b.norm(dim=-1, keepdim=True)
    unit_a = torch.where(norm_a == 0, torch.zeros_like(a), a / norm_a)
    unit_b = torch.where(norm_b == 0, torch.zeros_like(b), b / norm_b)
    cos = (unit_a * unit_b).sum(dim=-1, keepdim=True)
    omega = torch.acos(cos)
    sin_omega = torch.sin(omega)
    mixed = (torch.sin((1.0 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / sin_omega
    mixed = mixed * (norm_a * (1.0 - t) + norm_b * t)
    mixed = torch.where(cos > 1 - 1e-5, a, mixed)
    return torch.where(cos < 1e-5 - 1, a * (1.0 - t) + b * t, mixed)


def _neighbours(old: int, new: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """For each of ``new`` target positions: the two source indices and the blend ratio
    (half-pixel centres, as bilinear interpolation without ``align_corners``)."""
    scale = old / new
    pos = ((torch.arange(new, dtype=torch.float32, device=device) + 0.5) * scale - 0.5).clamp(
        0, old - 1
    )
    low = pos.floor().to(torch.int64)
    high = (low + 1).clamp(max=old - 1)
    return low, high, (pos - low.to(pos.dtype))


def _slerp_axis(samples: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` samples along ``dim`` (2 or 3) by slerp of channel vectors."""
    low, high, ratio = _neighbours(samples.shape[dim], size, samples.device)
    first = samples.index_select(dim, low).movedim(1, -1)
    second = samples.index_select(dim, high).movedim(1, -1)
    shape = [1, 1, 1]
    shape[dim - 1] = size
    weights = ratio.reshape(shape).expand(first.shape[:-1]).reshape(-1, 1)
    c = samples.shape[1]
    mixed = slerp_rows(first.reshape(-1, c), second.reshape(-1, c), weights)
    return mixed.reshape(first.shape).movedim(-1, 1)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` by spherical interpolation of channel vectors (W, then H)."""
    dtype = samples.dtype
    wide = _slerp_axis(samples.float(), width, 3)
    return _slerp_axis(wide, height, 2).to(dtype)


def common_upscale(
    samples: torch.Tensor, width: int, height: int, method: str, crop: str
) -> torch.Tensor:
    """Resize channels-first ``samples`` to ``width x height``.

    ``crop="center"`` first crops to the target aspect ratio. ``method`` is a
    ``torch.nn.functional.interpolate`` mode (no ``align_corners``, no antialias), or
    ``lanczos`` (Pillow) or ``bislerp``.
    """
    # Spherical interpolation holds a dozen intermediates of the output's size at once
    # (measured: 820 MiB of peak for a 64 MiB output).
    copies = 16 if method == "bislerp" else 1
    check_allocation((*samples.shape[:-2], height, width), samples.dtype, copies)
    source = center_crop_for(samples, width, height) if crop == "center" else samples
    if method == "bislerp":
        return bislerp(source, width, height)
    if method == "lanczos":
        return lanczos(source, width, height)
    return F.interpolate(source, size=(height, width), mode=method)


def gaussian_kernel(size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """A normalised ``size x size`` gaussian sampled on a ``[-1, 1]`` grid (ComfyUI's)."""
    axis = torch.linspace(-1, 1, size, device=device)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    d = torch.sqrt(x * x + y * y)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return g / g.sum()


def filter2d(image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Convolve each channel of an IMAGE with ``kernel``, reflecting ``radius`` at the edges."""
    channels = image.shape[-1]
    weight = kernel.to(image.device, image.dtype).repeat(channels, 1, 1).unsqueeze(1)
    chw = image.permute(0, 3, 1, 2)
    padded = F.pad(chw, (radius, radius, radius, radius), "reflect")
    out = F.conv2d(padded, weight, groups=channels)
    return out.permute(0, 2, 3, 1)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """An IMAGE frame ``[H, W, C]`` as 8-bit pixels: ``clip(x * 255)`` then truncation."""
    return (image * 255.0).clamp_(0, 255).to(torch.uint8).cpu().numpy()


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """8-bit pixels as floats in 0..1."""
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Cut or cyclically repeat ``tensor`` along dim 0 to ``batch`` entries."""
    size = tensor.shape[0]
    if size > batch:
        return tensor[:batch]
    if size < batch:
        check_allocation((batch, *tensor.shape[1:]), tensor.dtype)
        reps = [math.ceil(batch / size)] + [1] * (tensor.ndim - 1)
        return tensor.repeat(reps)[:batch]
    return tensor
