"""Which node inputs name model files, and the ComfyUI model folder each reads.

ComfyUI's ``/object_info`` says which values an input accepts but not where they come from,
so whether an input names a model file is decided from its choices (see
:func:`comfyfleet.workflow.objectinfo.is_model_input`); the tables here only supply the folder
of ComfyUI's standard loader inputs, which custom loaders keep. They are the one place that
says so: the models service derives its model kinds from them.
"""

from __future__ import annotations

from typing import Final

#: File name endings of model weights (lower case).
MODEL_EXTENSIONS: Final = (
    ".safetensors",
    ".sft",
    ".ckpt",
    ".pt",
    ".pt2",
    ".pth",
    ".bin",
    ".pkl",
    ".gguf",
    ".onnx",
)

#: Inputs that name a model in the same folder whatever node carries them.
FOLDER_BY_INPUT: Final[dict[str, str]] = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "control_net_name": "controlnet",
    "unet_name": "diffusion_models",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
}

#: Inputs whose folder depends on the node: ``model_name`` and ``clip_name`` mean different
#: things on different loaders.
FOLDER_BY_NODE_INPUT: Final[dict[tuple[str, str], str]] = {
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name1"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name2"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name4"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("ModelPatchLoader", "name"): "model_patches",
}


def standard_folder(class_type: str, input_name: str) -> str | None:
    """The model folder ComfyUI's own loaders read for this input; None when not standard."""
    return FOLDER_BY_NODE_INPUT.get((class_type, input_name)) or FOLDER_BY_INPUT.get(input_name)


def has_model_extension(name: object) -> bool:
    """Whether ``name`` is a file name with a model weights ending."""
    return isinstance(name, str) and name.lower().endswith(MODEL_EXTENSIONS)
