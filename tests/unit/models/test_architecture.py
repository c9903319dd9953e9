"""Guessing component and family from tensor names (tiny tensors with real key names)."""

from __future__ import annotations

import io

import pytest
import torch

from services.models.architecture import Architecture, guess
from services.models.inspection import inspect_stream
from services.models.safetensors_format import read_header
from tests.unit.models.files import safetensors_bytes

T = torch.float16


def guess_of(shapes: dict[str, tuple[int, ...]]) -> Architecture:
    blob = safetensors_bytes({name: torch.zeros(shape, dtype=T) for name, shape in shapes.items()})
    return guess(read_header(io.BytesIO(blob), len(blob)).tensors)


UNET = "model.diffusion_model."
CROSS_KEY = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
SDXL_CROSS_KEY = "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"


def _checkpoint(context: int) -> dict[str, tuple[int, ...]]:
    return {
        UNET + "input_blocks.0.0.weight": (8, 4, 1, 1),
        UNET + CROSS_KEY: (8, context),
        "first_stage_model.decoder.conv_in.weight": (8, 4, 1, 1),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (8,),
    }


CASES: dict[str, tuple[dict[str, tuple[int, ...]], Architecture]] = {
    "sd15 checkpoint": (_checkpoint(768), Architecture("sd15", "checkpoint")),
    "sd2 checkpoint": (_checkpoint(1024), Architecture("sd2", "checkpoint")),
    "sdxl checkpoint": (
        {
            UNET + SDXL_CROSS_KEY: (8, 2048),
            UNET + "label_emb.0.0.weight": (8, 8),
            "conditioner.embedders.1.model.ln_final.weight": (8,),
            "first_stage_model.decoder.conv_in.weight": (8, 4, 1, 1),
        },
        Architecture("sdxl", "checkpoint"),
    ),
    "sdxl unet alone": (
        {UNET + SDXL_CROSS_KEY: (8, 2048)},
        Architecture("sdxl", "diffusion_model"),
    ),
    "sd3 checkpoint": (
        {
            UNET + "joint_blocks.0.context_block.attn.qkv.weight": (8, 8),
            UNET + "x_embedder.proj.weight": (8, 16, 2, 2),
            "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": (8,),
        },
        Architecture("sd3", "checkpoint"),
    ),
    "flux diffusion model": (
        {
            "double_blocks.0.img_attn.qkv.weight": (8, 8),
            "single_blocks.0.linear1.weight": (8, 8),
            "img_in.weight": (8, 64),
        },
        Architecture("flux", "diffusion_model"),
    ),
    "sd15 lora, kohya": (
        {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (
                4,
                768,
            ),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (
                320,
                4,
            ),
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768),
        },
        Architecture("sd15", "lora"),
    ),
    "sdxl lora, peft": (
        {
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (
                4,
                2048,
            ),
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (
                640,
                4,
            ),
        },
        Architecture("sdxl", "lora"),
    ),
    "sdxl lora, text encoder 2 only": (
        {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)},
        Architecture("sdxl", "lora"),
    ),
    "flux lora, kohya": (
        {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 3072)},
        Architecture("flux", "lora"),
    ),
    "flux lora, diffusers": (
        {
            "transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight": (4, 8),
            "transformer.transformer_blocks.0.attn.add_k_proj.lora_A.weight": (4, 8),
        },
        Architecture("flux", "lora"),
    ),
    "sd3 lora, diffusers": (
        {"transformer.transformer_blocks.0.attn.add_k_proj.lora_A.weight": (4, 8)},
        Architecture("sd3", "lora"),
    ),
    "sd3 lora, kohya": (
        {"lora_unet_joint_blocks_0_context_block_attn_qkv.lora_down.weight": (4, 8)},
        Architecture("sd3", "lora"),
    ),
    "sd vae": (
        {
            "encoder.conv_in.weight": (8, 3, 1, 1),
            "decoder.conv_in.weight": (8, 4, 1, 1),
            "quant_conv.weight": (8, 8, 1, 1),
            "post_quant_conv.weight": (4, 4, 1, 1),
        },
        Architecture("sd", "vae"),
    ),
    "flux vae, diffusers names": (
        {
            "encoder.down_blocks.0.resnets.0.conv1.weight": (8, 8, 1, 1),
            "decoder.conv_in.weight": (8, 16, 1, 1),
        },
        Architecture("sd3-flux", "vae"),
    ),
    "t5 text encoder": (
        {"encoder.block.0.layer.0.SelfAttention.k.weight": (8, 8), "shared.weight": (8, 8)},
        Architecture("unknown", "text_encoder"),
    ),
    "clip vision": (
        {"vision_model.embeddings.patch_embedding.weight": (8, 3, 1, 1)},
        Architecture("unknown", "clip_vision"),
    ),
    "something else": ({"fc.weight": (2, 2)}, Architecture("unknown", "unknown")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_guess(case: str) -> None:
    shapes, expected = CASES[case]
    assert guess_of(shapes) == expected


def test_no_tensors_is_unknown() -> None:
    assert guess([]) == Architecture("unknown", "unknown")


def test_guess_is_part_of_the_recorded_metadata() -> None:
    shapes, _ = CASES["sdxl lora, peft"]
    blob = safetensors_bytes({n: torch.zeros(s, dtype=T) for n, s in shapes.items()})
    meta = inspect_stream(io.BytesIO(blob), len(blob))
    assert (meta["architecture"], meta["component"]) == ("sdxl", "lora")
    assert meta["dtypes"] == {"F16": 2}
