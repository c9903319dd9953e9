"""Guessing what a safetensors file is from its tensor names and a few shapes.

Two answers: the component (a full checkpoint, a diffusion model alone, a LoRA, a VAE) and
the base family (SD1.5, SD2, SDXL, SD3, Flux). Names come in three spellings -- ComfyUI/LDM
("model.diffusion_model.input_blocks.4.1"), diffusers ("down_blocks.1.attentions.0") and
kohya's LoRA keys, which join the same path with underscores ("lora_unet_input_blocks_4_1") --
so the patterns accept "." or "_" between path parts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.models.safetensors_format import TensorInfo

UNKNOWN = "unknown"

_LORA = re.compile(r"(^|[._])(lora_up|lora_down|lora_A|lora_B|lora\.up|lora\.down)[._]")
_DIFFUSION = re.compile(
    r"(^|[._])(diffusion_model|input_blocks|double_blocks|joint_blocks|down_blocks"
    r"|transformer_blocks)[._]"
)
_CHECKPOINT_EXTRAS = re.compile(
    r"^(first_stage_model|cond_stage_model|conditioner|text_encoders)\."
)
_VAE = re.compile(r"^(encoder|decoder|quant_conv|post_quant_conv)\.")
_CLIP_VISION = re.compile(r"(^|\.)vision_model\.")
_TEXT_ENCODER = re.compile(r"(^|\.)(text_model\.encoder\.layers|encoder\.block)\.\d")

_FLUX = re.compile(r"(^|[._])(double|single)[._]blocks[._]\d|single_transformer_blocks")
_SD3 = re.compile(r"(^|[._])joint[._]blocks[._]\d")
_DIFFUSERS_MMDIT = re.compile(r"(^|\.)transformer_blocks\.\d+\.attn\.add_[qkv]_proj")
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k[._]")
_SDXL_TEXT = re.compile(r"^(conditioner\.embedders\.1\.|lora_te2_)")
_VAE_DECODER_IN = re.compile(r"^decoder\.conv_in\.weight$")

# The width of the text embedding the UNet attends to tells SD1.x, SD2.x and SDXL apart.
_FAMILY_BY_CONTEXT_DIM = {768: "sd15", 1024: "sd2", 1280: "sdxl-refiner", 2048: "sdxl"}
# The latent channels a VAE decodes: SD1.x/SD2.x/SDXL use 4, SD3 and Flux 16.
_VAE_FAMILY_BY_CHANNELS = {4: "sd", 16: "sd3-flux"}


@dataclass(frozen=True)
class Architecture:
    family: str
    component: str


def guess(tensors: Sequence[TensorInfo]) -> Architecture:
    names = [t.name for t in tensors]
    component = _component(names)
    family = _vae_family(tensors) if component == "vae" else _family(tensors)
    return Architecture(family, component)


def _component(names: Sequence[str]) -> str:
    # Order matters: a LoRA names UNet blocks too, and a diffusers VAE has down_blocks.
    if _any(_LORA, names):
        return "lora"
    if all(_VAE.match(n) for n in names) and any(n.startswith("decoder.") for n in names):
        return "vae"
    if _any(_DIFFUSION, names):
        return "checkpoint" if _any(_CHECKPOINT_EXTRAS, names) else "diffusion_model"
    if _any(_CLIP_VISION, names):
        return "clip_vision"
    if _any(_TEXT_ENCODER, names):
        return "text_encoder"
    return UNKNOWN


def _family(tensors: Sequence[TensorInfo]) -> str:
    names = [t.name for t in tensors]
    if _any(_FLUX, names):
        return "flux"
    if _any(_SD3, names) or _any(_DIFFUSERS_MMDIT, names):
        return "sd3"
    context = _context_dim(tensors)
    if context in _FAMILY_BY_CONTEXT_DIM:
        return _FAMILY_BY_CONTEXT_DIM[context]
    return "sdxl" if _any(_SDXL_TEXT, names) else UNKNOWN


def _context_dim(tensors: Iterable[TensorInfo]) -> int | None:
    """The input width of a cross-attention key projection (or of a LoRA's down matrix)."""
    for t in tensors:
        if not _CROSS_ATTENTION_KEY.search(t.name) or len(t.shape) != 2:
            continue
        if _LORA.search(t.name) and not re.search(r"lora_down|lora_A|lora\.down", t.name):
            continue
        return t.shape[1]
    return None


def _vae_family(tensors: Sequence[TensorInfo]) -> str:
    for t in tensors:
        if _VAE_DECODER_IN.match(t.name) and len(t.shape) == 4:
            return _VAE_FAMILY_BY_CHANNELS.get(t.shape[1], UNKNOWN)
    return UNKNOWN


def _any(pattern: re.Pattern[str], names: Iterable[str]) -> bool:
    return any(pattern.search(n) for n in names)
