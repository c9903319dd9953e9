"""A smoke test for every native node type, on tiny tensors.

Each case is a small workflow whose interesting values are captured by a test-only output
node; a final test checks that the cases cover the whole catalog.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from PIL import Image

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.io import MemoryInputStore, MemoryOutputSink
from comfyfleet.workflow.runner import (
    NodeContext,
    NodeDefinition,
    NodeOutput,
    NodeRegistry,
    RunResult,
    RunStatus,
)
from comfyfleet.workflow.specs import InputSpec, NodeSpec
from services.executor.native import NativeEngine
from services.executor.native.registry import native_definitions
from tests.engine.devices import native_device

CAPTURED: dict[str, Any] = {}


def _capture(ctx: NodeContext, value: Any) -> NodeOutput:
    CAPTURED[ctx.node_id] = value
    return NodeOutput((), None)


CAPTURE = NodeDefinition(
    NodeSpec("Capture", "test", (InputSpec("value", "*"),), output_node=True), _capture
)
CAPTURE_LIST = NodeDefinition(
    NodeSpec("CaptureList", "test", (InputSpec("value", "*"),), output_node=True),
    _capture,
    input_is_list=True,
)


@pytest.fixture(scope="module")
def smoke_engine() -> NativeEngine:
    registry = NodeRegistry([*native_definitions(), CAPTURE, CAPTURE_LIST])
    return NativeEngine(native_device(), registry=registry)


def _latent_file(samples: torch.Tensor, versioned: bool = True) -> bytes:
    tensors = {"latent_tensor": samples}
    if versioned:
        tensors["latent_format_version_0"] = torch.tensor([])
    return safetensors.torch.save(tensors)


def _png(mode: str, size: tuple[int, int], color: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def store(ref_dir: Path) -> MemoryInputStore:
    ramp = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8) / 100
    return MemoryInputStore(
        {
            "shapes.png": (ref_dir / "inputs" / "shapes.png").read_bytes(),
            "alpha.png": (ref_dir / "inputs" / "alpha.png").read_bytes(),
            "gray.png": _png("L", (8, 6), 200),
            "ramp.latent": _latent_file(ramp),
            "old.latent": _latent_file(torch.ones(1, 4, 8, 8), versioned=False),
        }
    )


def n(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def cap(source: str, slot: int = 0) -> dict[str, Any]:
    return n("Capture", value=[source, slot])


IMG = n("EmptyImage", width=16, height=12, batch_size=2, color=0x336699)
IMG_B = n("EmptyImage", width=8, height=8, batch_size=1, color=0xFF0000)
MASK = n("SolidMask", value=1.0, width=16, height=12)
LAT = n("LoadLatent", latent="ramp.latent")
REGEX_FLAGS = {"case_insensitive": True, "multiline": False, "dotall": False}
LAT_B = n("EmptyLatentImage", width=64, height=64, batch_size=1)


@dataclass(frozen=True)
class Case:
    name: str
    workflow: dict[str, dict[str, Any]]
    check: Callable[[dict[str, Any], RunResult, MemoryOutputSink], None]


Check = Callable[[dict[str, Any], RunResult, MemoryOutputSink], None]


def all_of(*checks: Check) -> Check:
    def check(values: dict[str, Any], result: RunResult, sink: MemoryOutputSink) -> None:
        for one in checks:
            one(values, result, sink)

    return check


def shape_is(node: str, *shape: int) -> Check:
    def check(values: dict[str, Any], result: RunResult, sink: Any) -> None:
        value = values[node]
        tensor = value["samples"] if isinstance(value, dict) else value
        assert tuple(tensor.shape) == shape

    return check


def equals(node: str, expected: Any) -> Check:
    def check(values: dict[str, Any], result: RunResult, sink: Any) -> None:
        assert values[node] == expected

    return check


def _check_blends(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    for key in ("10", "11", "12", "13", "14", "15"):
        assert values[key].shape == (2, 12, 16, 3)
        assert float(values[key].min()) >= 0.0 and float(values[key].max()) <= 1.0
    normal = values["10"]
    assert torch.allclose(normal[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def _check_noise(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert torch.equal(values["3"], values["4"])
    assert not torch.equal(values["3"], values["6"])
    assert torch.equal(values["5"], torch.full_like(values["5"], 0.2))


def _check_grow(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert int(values["10"].sum()) == 5
    assert int(values["11"].sum()) == 9
    assert int(values["12"].sum()) == 0


def _check_feather(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    out = values["2"]
    assert out.shape == (1, 12, 16)
    assert float(out[0, 6, 0]) == pytest.approx(0.25)
    assert float(out[0, 6, 8]) == pytest.approx(1.0)


def _check_quantize(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    for key in ("10", "11", "12"):
        colours = torch.unique(values[key].reshape(-1, 3), dim=0)
        assert len(colours) <= 2


def _check_morphology(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    source = values["1"]
    assert torch.all(values["erode"] <= source) and torch.all(values["dilate"] >= source)
    for key in ("open", "close", "gradient", "top_hat", "bottom_hat"):
        assert values[key].shape == source.shape


def _check_canny(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    edges = values["2"]
    assert edges.shape == (1, 192, 256, 3)
    assert set(torch.unique(edges).tolist()) <= {0.0, 1.0}
    assert 0 < float(edges.mean()) < 0.5


def _check_alpha(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    rgba = values["3"]
    assert rgba.shape == (1, 128, 128, 4)
    rgb, mask = values["4"], values["5"]
    assert torch.allclose(rgb, values["1"])
    assert torch.allclose(mask, values["2"], atol=1e-6)


def _check_porter_duff(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    for key, value in values.items():
        if key.startswith("pd_img_"):
            assert value.shape == (1, 12, 16, 3)
            assert float(value.min()) >= 0.0 and float(value.max()) <= 1.0
    assert torch.allclose(values["pd_img_SRC"][0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert float(values["pd_mask_CLEAR"].min()) == 1.0


def _check_stitch(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert tuple(values["3"].shape) == (2, 12, 16 + 12, 3)
    assert tuple(values["4"].shape) == (2, 12 + 2 + 8, 16, 3)
    assert tuple(values["5"].shape) == (2, 12, 16, 3)
    assert tuple(values["6"].shape) == (2, 12, 16 + 8, 3)


def _check_latent_math(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    ramp = values["1"]["samples"]
    assert torch.allclose(values["add"]["samples"], ramp * 2)
    assert torch.allclose(values["sub"]["samples"], torch.zeros_like(ramp))
    assert torch.allclose(values["mul"]["samples"], ramp * 3)
    assert torch.allclose(values["interp"]["samples"], ramp, atol=1e-5)
    assert torch.allclose(values["blend"]["samples"], ramp)


def _check_latent_batches(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert values["batch"]["samples"].shape == (3, 4, 8, 8)
    assert values["batch"]["batch_index"] == [0, 1, 0]
    assert values["from"]["samples"].shape == (1, 4, 8, 8)
    assert values["from"]["batch_index"] == [1]
    assert values["repeat"]["samples"].shape == (6, 4, 8, 8)
    assert values["repeat"]["batch_index"] == [0, 1, 0, 2, 3, 2]
    assert values["fixed"]["batch_index"] == [0, 0, 0]
    assert "batch_index" not in values["random"]
    masked = values["masked"]
    assert masked["noise_mask"].shape == (1, 1, 12, 16)
    rebatched = values["rebatch"]
    assert [r["samples"].shape[0] for r in rebatched] == [2, 1]
    assert [r["batch_index"] for r in rebatched] == [[0, 1], [0]]
    assert all("noise_mask" not in r for r in rebatched)


def _check_latent_geometry(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    ramp = values["1"]["samples"]
    assert torch.equal(values["flip"]["samples"], torch.flip(ramp, dims=[3]))
    assert torch.equal(values["rot"]["samples"], torch.rot90(ramp, k=1, dims=[3, 2]))
    assert values["crop"]["samples"].shape == (2, 4, 8, 8)
    assert values["cut"]["samples"].shape == (2, 4, 8, 3)
    assert values["concat"]["samples"].shape == (2, 4, 16, 8)
    assert values["up"]["samples"].shape == (2, 4, 16, 16)
    assert values["bislerp"]["samples"].shape == (2, 4, 12, 12)
    assert values["upw"]["samples"].shape == (2, 4, 8, 8)
    composite = values["comp"]["samples"]
    assert torch.equal(composite[:, :, 2:, 2:], torch.zeros_like(composite[:, :, 2:, 2:]))
    assert torch.equal(composite[:, :, :2, :], ramp[:, :, :2, :])
    feathered = values["compf"]["samples"]
    assert feathered.shape == ramp.shape
    masked = values["compm"]["samples"]
    assert torch.equal(masked[:, :, 1:, 1:], torch.zeros_like(masked[:, :, 1:, 1:]))


def _check_loaders(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert values["img"].shape == (1, 128, 128, 3)
    assert values["mask"].shape == (1, 128, 128)
    assert values["gray"].shape == (1, 6, 8, 3)
    assert values["graymask"].shape == (1, 64, 64)
    assert float(values["gray"][0, 0, 0, 0]) == pytest.approx(200 / 255)
    assert values["maskonly"].shape == (1, 128, 128)
    assert float(values["red"].max()) <= 1.0
    assert torch.allclose(values["old"]["samples"], torch.full((1, 4, 8, 8), 1 / 0.18215))


def _check_savers(values: dict[str, Any], result: RunResult, sink: MemoryOutputSink) -> None:
    names = sorted(f.filename for f in sink.files)
    assert any(name.startswith("ComfyUI_temp_") for name in names)
    assert "16x12_00001_.png" in names and "x_00001_.latent" in names
    by_node = {f.node_id: f for f in sink.files}
    assert by_node["save"].subfolder == "sub"
    apng = Image.open(io.BytesIO(by_node["apng"].data))
    assert getattr(apng, "n_frames", 1) == 2
    assert by_node["webp"].filename.endswith(".webp")
    webp = Image.open(io.BytesIO(by_node["webp"].data))
    assert getattr(webp, "n_frames", 1) == 2
    assert result.ui["apng"]["animated"] == [True]
    temp = [f for f in sink.files if f.type == "temp"]
    assert len(temp) == 3
    assert result.ui["text"]["text"] == ["hello"]


def _check_strings(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert values["concat"] == "ab-cd"
    assert values["sub"] == "ell"
    assert values["len"] == 5
    assert values["case"] == "Hello World"
    assert values["trim"] == "x  "
    assert values["replace"] == "hexxo"
    assert values["contains"] is True
    assert values["compare"] is True
    assert values["match"] is True
    assert values["badregex"] is False
    assert values["extract"] == "12\n34"
    assert values["group"] == "34"
    assert values["regrep"] == "a#b#"
    assert values["int"] == 7 and values["float"] == 1.5 and values["bool"] is True
    assert values["multi"] == "x\ny"


def _check_resize(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert tuple(values["max"].shape) == (1, 96, 128, 3)
    assert tuple(values["total"].shape) == (1, 89, 118, 3)
    padded = values["pad"]
    assert tuple(padded.shape) == (1, 100, 100, 3)
    assert float(padded[0, 0, 0, 0]) == 1.0
    for method in ("area", "bicubic", "lanczos", "nearest-exact", "bilinear"):
        assert tuple(values[method].shape) == (1, 30, 40, 3)
    assert tuple(values["keep"].shape) == (1, 15, 20, 3)


def _check_masks(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert torch.equal(values["inv"], torch.zeros(1, 12, 16))
    assert torch.equal(values["thr"], torch.ones(1, 12, 16))
    assert torch.equal(values["tomask"], torch.full((2, 12, 16), 0x66 / 255))
    assert torch.equal(values["color"], torch.ones(2, 12, 16))
    assert values["crop"].shape == (1, 4, 6)
    composed = values["comp"]
    assert float(composed[0, 0, 0]) == 1.0 and float(composed[0, 5, 5]) == 0.0
    for op in ("add", "subtract", "and", "or", "xor"):
        assert values[op].shape == (1, 12, 16)
    assert values["img"].shape == (1, 12, 16, 3)


def _check_batches(values: dict[str, Any], result: RunResult, sink: Any) -> None:
    assert tuple(values["batch"].shape) == (3, 12, 16, 3)
    assert tuple(values["repeat"].shape) == (6, 12, 16, 3)
    assert [tuple(b.shape) for b in values["rebatch"]] == [(3, 12, 16, 3)] * 2


CASES = [
    Case(
        "image_basics",
        {
            "1": IMG,
            "2": n("ImageInvert", image=["1", 0]),
            "3": n("ImageBlur", image=["2", 0], blur_radius=2, sigma=1.0),
            "4": n("ImageSharpen", image=["3", 0], sharpen_radius=1, sigma=1.0, alpha=1.0),
            "5": n("ImageFlip", image=["4", 0], flip_method="x-axis: vertically"),
            "6": n("ImageRotate", image=["5", 0], rotation="270 degrees"),
            "7": n("ImageCrop", image=["6", 0], width=5, height=4, x=1, y=2),
            "8": n("GetImageSize", image=["7", 0]),
            "9": n("Capture", value=["8", 0]),
            "10": n("Capture", value=["8", 1]),
            "11": n("Capture", value=["8", 2]),
            "12": n("ImageScaleBy", image=["1", 0], upscale_method="area", scale_by=0.5),
            "13": cap("12"),
            "14": n("ImageFromBatch", image=["1", 0], batch_index=1, length=5),
            "15": cap("14"),
        },
        all_of(
            equals("9", 5),
            equals("10", 4),
            equals("11", 2),
            shape_is("13", 2, 6, 8, 3),
            shape_is("15", 1, 12, 16, 3),
        ),
    ),
    Case(
        "blend",
        {
            "1": IMG,
            "2": IMG_B,
            **{
                str(10 + i): n(
                    "ImageBlend",
                    image1=["1", 0],
                    image2=["2", 0],
                    blend_factor=1.0,
                    blend_mode=mode,
                )
                for i, mode in enumerate(
                    ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
                )
            },
            **{str(20 + i): cap(str(10 + i)) for i in range(6)},
        },
        lambda v, r, s: _check_blends(
            {k: v[str(int(k) + 10)] for k in map(str, range(10, 16))}, r, s
        ),
    ),
    Case(
        "noise",
        {
            "1": IMG,
            "2": n("ImageAddNoise", image=["1", 0], seed=5, strength=0.5),
            "3": cap("2"),
            "4": cap("7"),
            "7": n("ImageAddNoise", image=["1", 0], seed=5, strength=0.5),
            "8": n("EmptyImage", width=4, height=4, batch_size=1, color=0x333333),
            "9": n("ImageAddNoise", image=["8", 0], seed=1, strength=0.0),
            "5": cap("9"),
            "10": n("ImageAddNoise", image=["1", 0], seed=6, strength=0.5),
            "6": cap("10"),
        },
        _check_noise,
    ),
    Case(
        "grow",
        {
            "1": n("SolidMask", value=0.0, width=7, height=7),
            "2": n("SolidMask", value=1.0, width=1, height=1),
            "3": n(
                "MaskComposite", destination=["1", 0], source=["2", 0], x=3, y=3, operation="add"
            ),
            "4": n("GrowMask", mask=["3", 0], expand=1, tapered_corners=True),
            "5": n("GrowMask", mask=["3", 0], expand=1, tapered_corners=False),
            "6": n("GrowMask", mask=["3", 0], expand=-1, tapered_corners=True),
            "10": cap("4"),
            "11": cap("5"),
            "12": cap("6"),
        },
        _check_grow,
    ),
    Case(
        "feather",
        {
            "1": MASK,
            "2": n("FeatherMask", mask=["1", 0], left=4, top=0, right=0, bottom=0),
            "3": cap("2"),
        },
        lambda v, r, s: _check_feather({"2": v["3"]}, r, s),
    ),
    Case(
        "quantize",
        {
            "0": n("LoadImage", image="shapes.png"),
            "1": n("ImageScaleBy", image=["0", 0], upscale_method="area", scale_by=0.25),
            "2": n("ImageQuantize", image=["1", 0], colors=2, dither="none"),
            "3": n("ImageQuantize", image=["1", 0], colors=2, dither="floyd-steinberg"),
            "4": n("ImageQuantize", image=["1", 0], colors=2, dither="bayer-4"),
            "10": cap("2"),
            "11": cap("3"),
            "12": cap("4"),
        },
        _check_quantize,
    ),
    Case(
        "morphology",
        {
            "0": n("LoadImage", image="shapes.png"),
            "s": n("ImageScaleBy", image=["0", 0], upscale_method="area", scale_by=0.25),
            "1": cap("s"),
            **{
                f"m_{op}": n("Morphology", image=["s", 0], operation=op, kernel_size=4)
                for op in ("erode", "dilate", "open", "close", "gradient", "top_hat", "bottom_hat")
            },
            **{
                op: cap(f"m_{op}")
                for op in ("erode", "dilate", "open", "close", "gradient", "top_hat", "bottom_hat")
            },
        },
        _check_morphology,
    ),
    Case(
        "canny",
        {
            "1": n("LoadImage", image="shapes.png"),
            "2": n("Canny", image=["1", 0], low_threshold=0.05, high_threshold=0.15),
            "3": cap("2"),
        },
        lambda v, r, s: _check_canny({"2": v["3"]}, r, s),
    ),
    Case(
        "alpha",
        {
            "0": n("LoadImage", image="alpha.png"),
            "1": cap("0", 0),
            "2": cap("0", 1),
            "j": n("JoinImageWithAlpha", image=["0", 0], alpha=["0", 1]),
            "3": cap("j"),
            "sp": n("SplitImageWithAlpha", image=["j", 0]),
            "4": cap("sp", 0),
            "5": cap("sp", 1),
        },
        _check_alpha,
    ),
    Case(
        "porter_duff",
        {
            "1": IMG_B,
            "2": IMG,
            "3": n("SolidMask", value=0.0, width=8, height=8),
            "4": n("SolidMask", value=0.5, width=16, height=12),
            **{
                f"pd_{mode}": n(
                    "PorterDuffImageComposite",
                    source=["1", 0],
                    source_alpha=["3", 0],
                    destination=["2", 0],
                    destination_alpha=["4", 0],
                    mode=mode,
                )
                for mode in NATIVE_CATALOG["PorterDuffImageComposite"].input("mode").choices  # type: ignore[union-attr]
            },
            **{
                f"pd_img_{mode}": cap(f"pd_{mode}", 0)
                for mode in NATIVE_CATALOG["PorterDuffImageComposite"].input("mode").choices  # type: ignore[union-attr]
            },
            "pd_mask_CLEAR": cap("pd_CLEAR", 1),
        },
        _check_porter_duff,
    ),
    Case(
        "stitch",
        {
            "1": IMG,
            "2": IMG_B,
            "s1": n(
                "ImageStitch",
                image1=["1", 0],
                image2=["2", 0],
                direction="right",
                match_image_size=True,
                spacing_width=0,
                spacing_color="white",
            ),
            "s2": n(
                "ImageStitch",
                image1=["1", 0],
                image2=["2", 0],
                direction="up",
                match_image_size=False,
                spacing_width=1,
                spacing_color="red",
            ),
            "s3": n(
                "ImageStitch",
                image1=["1", 0],
                direction="left",
                match_image_size=True,
                spacing_width=0,
                spacing_color="black",
            ),
            "s4": n(
                "ImageStitch",
                image1=["1", 0],
                image2=["2", 0],
                direction="left",
                match_image_size=False,
                spacing_width=0,
                spacing_color="black",
            ),
            "3": cap("s1"),
            "4": cap("s2"),
            "5": cap("s3"),
            "6": cap("s4"),
        },
        _check_stitch,
    ),
    Case(
        "latent_math",
        {
            "1": LAT,
            "2": LAT_B,
            "a": n("LatentAdd", samples1=["1", 0], samples2=["1", 0]),
            "b": n("LatentSubtract", samples1=["1", 0], samples2=["1", 0]),
            "c": n("LatentMultiply", samples=["1", 0], multiplier=3.0),
            "d": n("LatentInterpolate", samples1=["1", 0], samples2=["1", 0], ratio=0.3),
            "e": n("LatentBlend", samples1=["1", 0], samples2=["1", 0], blend_factor=0.3),
            "f": n("LatentAdd", samples1=["1", 0], samples2=["2", 0]),
            "add": cap("a"),
            "sub": cap("b"),
            "mul": cap("c"),
            "interp": cap("d"),
            "blend": cap("e"),
            "mixed": cap("f"),
        },
        lambda v, r, s: _check_latent_math({**v, "1": {"samples": v["mixed"]["samples"]}}, r, s),
    ),
    Case(
        "latent_batches",
        {
            "1": LAT,
            "2": LAT_B,
            "mask": MASK,
            "b": n("LatentBatch", samples1=["1", 0], samples2=["2", 0]),
            "f": n("LatentFromBatch", samples=["1", 0], batch_index=1, length=3),
            "r": n("RepeatLatentBatch", samples=["b", 0], amount=2),
            "sf": n("LatentBatchSeedBehavior", samples=["b", 0], seed_behavior="fixed"),
            "sr": n("LatentBatchSeedBehavior", samples=["b", 0], seed_behavior="random"),
            "m": n("SetLatentNoiseMask", samples=["2", 0], mask=["mask", 0]),
            "rb": n("RebatchLatents", latents=["b", 0], batch_size=2),
            "batch": cap("b"),
            "from": cap("f"),
            "repeat": cap("r"),
            "fixed": cap("sf"),
            "random": cap("sr"),
            "masked": cap("m"),
            "rebatch": n("CaptureList", value=["rb", 0]),
        },
        lambda v, r, s: _check_latent_batches(v, r, s),
    ),
    Case(
        "latent_geometry",
        {
            "1": LAT,
            "2": LAT_B,
            "m": n("SolidMask", value=1.0, width=64, height=64),
            "fl": n("LatentFlip", samples=["1", 0], flip_method="y-axis: horizontally"),
            "ro": n("LatentRotate", samples=["1", 0], rotation="90 degrees"),
            "cr": n("LatentCrop", samples=["1", 0], width=64, height=64, x=8, y=8),
            "cu": n("LatentCut", samples=["1", 0], dim="x", index=-3, amount=5),
            "co": n("LatentConcat", samples1=["1", 0], samples2=["1", 0], dim="-y"),
            "up": n(
                "LatentUpscale",
                samples=["1", 0],
                upscale_method="bilinear",
                width=128,
                height=0,
                crop="disabled",
            ),
            "bs": n("LatentUpscaleBy", samples=["1", 0], upscale_method="bislerp", scale_by=1.5),
            "uw": n(
                "LatentUpscale",
                samples=["1", 0],
                upscale_method="nearest-exact",
                width=0,
                height=0,
                crop="center",
            ),
            "cp": n(
                "LatentComposite", samples_to=["1", 0], samples_from=["2", 0], x=16, y=16, feather=0
            ),
            "cf": n(
                "LatentComposite",
                samples_to=["1", 0],
                samples_from=["2", 0],
                x=16,
                y=16,
                feather=16,
            ),
            "cm": n(
                "LatentCompositeMasked",
                destination=["1", 0],
                source=["2", 0],
                x=8,
                y=8,
                resize_source=False,
                mask=["m", 0],
            ),
            "1c": cap("1"),
            "flip": cap("fl"),
            "rot": cap("ro"),
            "crop": cap("cr"),
            "cut": cap("cu"),
            "concat": cap("co"),
            "up_": cap("up"),
            "bislerp": cap("bs"),
            "upw": cap("uw"),
            "comp": cap("cp"),
            "compf": cap("cf"),
            "compm": cap("cm"),
        },
        lambda v, r, s: _check_latent_geometry({**v, "1": v["1c"], "up": v["up_"]}, r, s),
    ),
    Case(
        "loaders",
        {
            "li": n("LoadImage", image="alpha.png"),
            "lg": n("LoadImage", image="gray.png"),
            "lm": n("LoadImageMask", image="alpha.png", channel="alpha"),
            "lr": n("LoadImageMask", image="shapes.png", channel="red"),
            "ll": n("LoadLatent", latent="old.latent"),
            "img": cap("li", 0),
            "mask": cap("li", 1),
            "gray": cap("lg", 0),
            "graymask": cap("lg", 1),
            "maskonly": cap("lm"),
            "red": cap("lr"),
            "old": cap("ll"),
        },
        _check_loaders,
    ),
    Case(
        "savers",
        {
            "1": IMG,
            "m": MASK,
            "l": LAT_B,
            "save": n("SaveImage", images=["1", 0], filename_prefix="sub/%width%x%height%"),
            "prev": n("PreviewImage", images=["1", 0]),
            "mprev": n("MaskPreview", mask=["m", 0]),
            "noisy": n("ImageAddNoise", image=["1", 0], seed=3, strength=0.5),
            "apng": n(
                "SaveAnimatedPNG",
                images=["noisy", 0],
                filename_prefix="anim",
                fps=6.0,
                compress_level=4,
            ),
            "webp": n(
                "SaveAnimatedWEBP",
                images=["noisy", 0],
                filename_prefix="anim",
                fps=6.0,
                lossless=False,
                quality=80,
                method="fastest",
            ),
            "lat": n("SaveLatent", samples=["l", 0], filename_prefix="latents/x"),
            "s": n("PrimitiveString", value="hello"),
            "text": n("PreviewAny", source=["s", 0]),
        },
        _check_savers,
    ),
    Case(
        "strings",
        {
            "a": n("PrimitiveString", value="ab"),
            "i": n("PrimitiveInt", value=7),
            "f": n("PrimitiveFloat", value=1.5),
            "b": n("PrimitiveBoolean", value=True),
            "ml": n("PrimitiveStringMultiline", value="x\ny"),
            "c": n("StringConcatenate", string_a=["a", 0], string_b="cd", delimiter="-"),
            "su": n("StringSubstring", string="hello", start=1, end=4),
            "le": n("StringLength", string="hello"),
            "cc": n("CaseConverter", string="hello world", mode="Title Case"),
            "tr": n("StringTrim", string="  x  ", mode="Left"),
            "re": n("StringReplace", string="hello", find="l", replace="x"),
            "ct": n("StringContains", string="Hello", substring="hell", case_sensitive=False),
            "cmp": n(
                "StringCompare",
                string_a="Hello",
                string_b="lo",
                mode="Ends With",
                case_sensitive=True,
            ),
            "rm": n("RegexMatch", string="abc123", regex_pattern=r"\d+", **REGEX_FLAGS),
            "rb": n("RegexMatch", string="abc", regex_pattern="(", **REGEX_FLAGS),
            "rx": n(
                "RegexExtract",
                string="a12b34",
                regex_pattern=r"\d+",
                mode="All Matches",
                group_index=1,
                **REGEX_FLAGS,
            ),
            "rg": n(
                "RegexExtract",
                string="a12b34",
                regex_pattern=r"b(\d+)",
                mode="First Group",
                group_index=1,
                **REGEX_FLAGS,
            ),
            "rr": n("RegexReplace", string="a1b2", regex_pattern=r"\d", replace="#"),
            "concat": cap("c"),
            "sub": cap("su"),
            "len": cap("le"),
            "case": cap("cc"),
            "trim": cap("tr"),
            "replace": cap("re"),
            "contains": cap("ct"),
            "compare": cap("cmp"),
            "match": cap("rm"),
            "badregex": cap("rb"),
            "extract": cap("rx"),
            "group": cap("rg"),
            "regrep": cap("rr"),
            "int": cap("i"),
            "float": cap("f"),
            "bool": cap("b"),
            "multi": cap("ml"),
        },
        _check_strings,
    ),
    Case(
        "resize",
        {
            "0": n("LoadImage", image="shapes.png"),
            "mx": n(
                "ImageScaleToMaxDimension", image=["0", 0], upscale_method="area", largest_size=128
            ),
            "tp": n(
                "ImageScaleToTotalPixels",
                image=["0", 0],
                upscale_method="bilinear",
                megapixels=0.01,
            ),
            "rp": n(
                "ResizeAndPadImage",
                image=["0", 0],
                target_width=100,
                target_height=100,
                padding_color="white",
                interpolation="bilinear",
            ),
            **{
                f"s_{m}": n(
                    "ImageScale",
                    image=["0", 0],
                    upscale_method=m,
                    width=40,
                    height=30,
                    crop="center",
                )
                for m in ("area", "bicubic", "lanczos", "nearest-exact", "bilinear")
            },
            "k": n(
                "ImageScale",
                image=["0", 0],
                upscale_method="bilinear",
                width=20,
                height=0,
                crop="disabled",
            ),
            "max": cap("mx"),
            "total": cap("tp"),
            "pad": cap("rp"),
            **{
                m: cap(f"s_{m}")
                for m in ("area", "bicubic", "lanczos", "nearest-exact", "bilinear")
            },
            "keep": cap("k"),
        },
        _check_resize,
    ),
    Case(
        "masks",
        {
            "1": IMG,
            "m": MASK,
            "z": n("SolidMask", value=0.0, width=4, height=4),
            "iv": n("InvertMask", mask=["m", 0]),
            "th": n("ThresholdMask", mask=["m", 0], value=0.5),
            "tm": n("ImageToMask", image=["1", 0], channel="green"),
            "cm": n("ImageColorToMask", image=["1", 0], color=0x336699),
            "cr": n("CropMask", mask=["m", 0], x=2, y=3, width=6, height=4),
            "mc": n(
                "MaskComposite",
                destination=["m", 0],
                source=["z", 0],
                x=3,
                y=3,
                operation="multiply",
            ),
            **{
                f"mc_{op}": n(
                    "MaskComposite", destination=["m", 0], source=["z", 0], x=1, y=1, operation=op
                )
                for op in ("add", "subtract", "and", "or", "xor")
            },
            "mi": n("MaskToImage", mask=["m", 0]),
            "inv": cap("iv"),
            "thr": cap("th"),
            "tomask": cap("tm"),
            "color": cap("cm"),
            "crop": cap("cr"),
            "comp": cap("mc"),
            **{op: cap(f"mc_{op}") for op in ("add", "subtract", "and", "or", "xor")},
            "img": cap("mi"),
        },
        _check_masks,
    ),
    Case(
        "batches",
        {
            "1": IMG,
            "2": n("EmptyImage", width=4, height=4, batch_size=1, color=0),
            "b": n("ImageBatch", image1=["1", 0], image2=["2", 0]),
            "r": n("RepeatImageBatch", image=["1", 0], amount=3),
            "rb": n("RebatchImages", images=["r", 0], batch_size=3),
            "pad": n(
                "ImagePadForOutpaint",
                image=["1", 0],
                left=8,
                top=0,
                right=0,
                bottom=8,
                feathering=2,
            ),
            "cmp": n(
                "ImageCompositeMasked",
                destination=["1", 0],
                source=["2", 0],
                x=14,
                y=10,
                resize_source=True,
            ),
            "batch": cap("b"),
            "repeat": cap("r"),
            "rebatch": n("CaptureList", value=["rb", 0]),
            "padded": cap("pad"),
            "composited": cap("cmp"),
        },
        all_of(
            _check_batches,
            shape_is("padded", 2, 20, 24, 3),
            shape_is("composited", 2, 12, 16, 3),
        ),
    ),
    Case(
        "empty_latents",
        {
            "1": n("EmptyLatentImage", width=64, height=32, batch_size=2),
            "2": n("EmptySD3LatentImage", width=64, height=64, batch_size=1),
            "3": cap("1"),
            "4": cap("2"),
        },
        all_of(shape_is("3", 2, 4, 4, 8), shape_is("4", 1, 16, 8, 8)),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_smoke(case: Case, smoke_engine: NativeEngine, store: MemoryInputStore) -> None:
    CAPTURED.clear()
    sink = MemoryOutputSink()
    result = smoke_engine.run(case.workflow, store, sink, use_cache=False)
    assert result.status is RunStatus.SUCCEEDED, (result.error, result.validation)
    assert result.validation.node_errors == ()
    case.check(dict(CAPTURED), result, sink)


def test_every_node_type_has_a_smoke_test() -> None:
    used = {node["class_type"] for case in CASES for node in case.workflow.values()}
    assert set(NATIVE_CATALOG) - used == set()
