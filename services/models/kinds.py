"""The kinds of model the registry holds, and the ComfyUI model folder of each.

A kind's name is the proto enum value's suffix in lower case (`MODEL_TYPE_LORA` is "lora"), so
the servicer converts without a second table; a unit test checks both stay in step.
"""

from __future__ import annotations

# ComfyUI's folder_paths names; the executor puts a downloaded file in this folder.
FOLDER_OF_KIND: dict[str, str] = {
    "checkpoint": "checkpoints",
    "lora": "loras",
    "vae": "vae",
    "controlnet": "controlnet",
    "upscale": "upscale_models",
    "embedding": "embeddings",
    "diffusion_model": "diffusion_models",
    "text_encoder": "text_encoders",
    "clip_vision": "clip_vision",
}

KINDS: frozenset[str] = frozenset(FOLDER_OF_KIND)


def folder_of(kind: str) -> str:
    return FOLDER_OF_KIND[kind]
