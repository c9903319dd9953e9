"""Nodes that read input files and write output files (through the run's store and sink)."""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors.torch
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from comfyfleet.workflow.budget import InputImageTooLarge, image_header
from comfyfleet.workflow.io import OutputFile, split_prefix
from comfyfleet.workflow.runner import NodeContext, NodeOutput
from services.executor.native.memory import active_guard, check_allocation
from services.executor.native.nodes.base import NodeSet, device_of
from services.executor.native.tensors import from_uint8, to_uint8

nodes = NodeSet()

_PREVIEW_LETTERS = "abcdefghijklmnopqrstupvxyz"


def file_fingerprint(ctx: NodeContext, inputs: Mapping[str, Any]) -> str:
    """``IS_CHANGED`` of the loaders: the sha256 of the named input file."""
    name = inputs.get("image", inputs.get("latent"))
    return ctx.inputs.fingerprint(str(name))


# --------------------------------------------------------------------------- saving


def expand_prefix(prefix: str, width: int, height: int) -> str:
    """Replace ComfyUI's server-side prefix variables (``%width%``, ``%year%`` ...)."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}",
        "%day%": f"{now.tm_mday:02}",
        "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}",
        "%second%": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


class _Target:
    """Where a saver writes: subfolder, base name and the next counter."""

    def __init__(
        self, ctx: NodeContext, prefix: str, type_: str, width: int = 0, height: int = 0
    ) -> None:
        self.ctx = ctx
        self.type = type_
        self.subfolder, self.name = split_prefix(expand_prefix(prefix, width, height))
        self.counter = ctx.outputs.next_counter(type_, self.subfolder, self.name)

    def write(self, suffix: str, data: bytes, content_type: str, batch: int = 0) -> dict[str, str]:
        """Write the next ``{name}_{counter:05}_{suffix}`` file; return its ui reference."""
        name = self.name.replace("%batch_num%", str(batch))
        filename = f"{name}_{self.counter:05}_{suffix}"
        self.counter += 1
        file = OutputFile(self.ctx.node_id, filename, self.subfolder, self.type, data, content_type)
        self.ctx.outputs.write(file)
        return file.ref()


def _png_info(ctx: NodeContext) -> PngInfo:
    info = PngInfo()
    if ctx.prompt:
        info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def _encode_png(frame: torch.Tensor, info: PngInfo, compress_level: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(frame)).save(
        buffer, format="PNG", pnginfo=info, compress_level=compress_level
    )
    return buffer.getvalue()


def save_images(
    ctx: NodeContext, images: torch.Tensor, prefix: str, type_: str, compress_level: int
) -> NodeOutput:
    """Write each image of the batch as a PNG carrying the prompt; report them as ``images``."""
    target = _Target(ctx, prefix, type_, images.shape[2], images.shape[1])
    info = _png_info(ctx)
    results = []
    for batch, frame in enumerate(images):
        ctx.check_cancelled()
        data = _encode_png(frame, info, compress_level)
        results.append(target.write(".png", data, "image/png", batch))
        ctx.progress(batch + 1, len(images))
    return NodeOutput((), {"images": results})


def _preview_prefix(prefix: str = "ComfyUI") -> str:
    return prefix + "_temp_" + "".join(random.choice(_PREVIEW_LETTERS) for _ in range(5))


@nodes.node("SaveImage")
def save_image(
    ctx: NodeContext, images: torch.Tensor, filename_prefix: str = "ComfyUI"
) -> NodeOutput:
    return save_images(ctx, images, filename_prefix, "output", 4)


@nodes.node("PreviewImage")
def preview_image(ctx: NodeContext, images: torch.Tensor) -> NodeOutput:
    return save_images(ctx, images, _preview_prefix(), "temp", 1)


@nodes.node("MaskPreview")
def mask_preview(ctx: NodeContext, mask: torch.Tensor) -> NodeOutput:
    preview = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1)
    return save_images(ctx, preview.expand(-1, -1, -1, 3), _preview_prefix(), "temp", 1)


@nodes.node("SaveLatent")
def save_latent(
    ctx: NodeContext, samples: Mapping[str, torch.Tensor], filename_prefix: str = "latents/ComfyUI"
) -> NodeOutput:
    target = _Target(ctx, filename_prefix, "output")
    metadata = {"prompt": json.dumps(ctx.prompt) if ctx.prompt else ""}
    for key, value in (ctx.extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    tensors = {
        "latent_tensor": samples["samples"].detach().to("cpu").contiguous(),
        "latent_format_version_0": torch.tensor([]),
    }
    data = safetensors.torch.save(tensors, metadata=metadata)
    return NodeOutput((), {"latents": [target.write(".latent", data, "application/octet-stream")]})


def _frames_u8(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(to_uint8(frame)) for frame in images]


@nodes.node("SaveAnimatedPNG")
def save_animated_png(
    ctx: NodeContext,
    images: torch.Tensor,
    filename_prefix: str,
    fps: float,
    compress_level: int,
) -> NodeOutput:
    target = _Target(ctx, filename_prefix, "output", images.shape[2], images.shape[1])
    frames = _frames_u8(images)
    info = PngInfo()
    chunks: list[tuple[str, Any]] = [("prompt", ctx.prompt)] if ctx.prompt else []
    chunks.extend((ctx.extra_pnginfo or {}).items())
    for key, value in chunks:
        payload = key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1")
        info.add(b"comf", payload, after_idat=True)
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="PNG",
        pnginfo=info,
        compress_level=compress_level,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
    )
    ref = target.write(".png", buffer.getvalue(), "image/apng")
    return NodeOutput((), {"images": [ref], "animated": [True]})


_WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


@nodes.node("SaveAnimatedWEBP")
def save_animated_webp(
    ctx: NodeContext,
    images: torch.Tensor,
    filename_prefix: str,
    fps: float,
    lossless: bool,
    quality: int,
    method: str,
) -> NodeOutput:
    target = _Target(ctx, filename_prefix, "output", images.shape[2], images.shape[1])
    frames = _frames_u8(images)
    exif = frames[0].getexif()
    if ctx.prompt:
        exif[0x0110] = f"prompt:{json.dumps(ctx.prompt)}"
    for offset, (key, value) in enumerate((ctx.extra_pnginfo or {}).items()):
        exif[0x010F - offset] = f"{key}:{json.dumps(value)}"
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="WEBP",
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
        exif=exif,
        lossless=lossless,
        quality=quality,
        method=_WEBP_METHODS[method],
    )
    ref = target.write(".webp", buffer.getvalue(), "image/webp")
    return NodeOutput((), {"images": [ref], "animated": [len(frames) != 1]})


# --------------------------------------------------------------------------- loading


def _open_image(ctx: NodeContext, name: str) -> Image.Image:
    """The input image ``name``, decoded only once its header shows it within the budget: a
    file of a few KB can declare billions of pixels (a decompression bomb)."""
    data = ctx.inputs.read(name)
    header = image_header(data)
    if header is not None:
        active_guard().check_image(name, header)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as err:
        raise InputImageTooLarge(f"the input image {name!r} is too large to decode: {err}") from err
    return image


def _alpha_mask(frame: Image.Image) -> torch.Tensor | None:
    """``1 - alpha`` of a frame, or ``None`` when it has no transparency."""
    if "A" in frame.getbands():
        alpha = frame.getchannel("A")
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = frame.convert("RGBA").getchannel("A")
    else:
        return None
    return 1.0 - from_uint8(np.asarray(alpha))


def _normalise_frame(frame: Image.Image) -> Image.Image:
    frame = ImageOps.exif_transpose(frame)
    if frame.mode == "I":
        frame = frame.point(lambda value: value * (1 / 255))
    return frame


@nodes.node("LoadImage", fingerprint=file_fingerprint)
def load_image(ctx: NodeContext, image: str) -> tuple[torch.Tensor, torch.Tensor]:
    source = _open_image(ctx, image)
    pictures: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    size: tuple[int, int] | None = None
    for raw in ImageSequence.Iterator(source):
        frame = _normalise_frame(raw)
        rgb = frame.convert("RGB")
        if size is None:
            size = rgb.size
        elif rgb.size != size:
            continue
        # Every frame so far, as an RGB image and a mask: an animation multiplies the pixels.
        check_allocation((len(pictures) + 1, size[1], size[0], 4))
        pictures.append(from_uint8(np.asarray(rgb))[None])
        mask = _alpha_mask(frame)
        masks.append((mask if mask is not None else torch.zeros((64, 64)))[None])
    if len(pictures) > 1 and source.format != "MPO":
        picture, mask = torch.cat(pictures), torch.cat(masks)
    else:
        picture, mask = pictures[0], masks[0]
    device = device_of(ctx)
    return picture.to(device), mask.to(device)


@nodes.node("LoadImageMask", fingerprint=file_fingerprint)
def load_image_mask(ctx: NodeContext, image: str, channel: str) -> tuple[torch.Tensor]:
    frame = ImageOps.exif_transpose(_open_image(ctx, image))
    if frame.getbands() != ("R", "G", "B", "A"):
        if frame.mode == "I":
            frame = frame.point(lambda value: value * (1 / 255))
        frame = frame.convert("RGBA")
    band = channel[0].upper()
    check_allocation((1, frame.height, frame.width))
    if band in frame.getbands():
        mask = from_uint8(np.asarray(frame.getchannel(band)))
        if band == "A":
            mask = 1.0 - mask
    else:
        mask = torch.zeros((64, 64))
    return (mask[None].to(device_of(ctx)),)


@nodes.node("LoadLatent", fingerprint=file_fingerprint)
def load_latent(ctx: NodeContext, latent: str) -> tuple[dict[str, torch.Tensor]]:
    tensors = safetensors.torch.load(ctx.inputs.read(latent))
    multiplier = 1.0 if "latent_format_version_0" in tensors else 1.0 / 0.18215
    samples = tensors["latent_tensor"].float() * multiplier
    return ({"samples": samples.to(device_of(ctx))},)
