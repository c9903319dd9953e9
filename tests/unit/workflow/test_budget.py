"""Resource bounds known before running: node output estimates and input image headers."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from comfyfleet.workflow.budget import (
    GIB,
    RESOURCE_BUDGET,
    BudgetReason,
    ResourceBudget,
    TensorEstimate,
    estimate_outputs,
    format_bytes,
    image_header,
)
from comfyfleet.workflow.graph import parse_workflow

BUDGET = RESOURCE_BUDGET


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def empty_image(width: int, height: int, batch: int) -> dict[str, Any]:
    return node("EmptyImage", width=width, height=height, batch_size=batch, color=0)


def over(graph: dict[str, Any], budget: ResourceBudget = BUDGET) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in budget.violations(parse_workflow(graph))]


def shape_of(graph: dict[str, Any], node_id: str, slot: int = 0) -> tuple[int, ...] | None:
    value = estimate_outputs(parse_workflow(graph)).get(node_id, (None,))[slot]
    return value.shape if isinstance(value, TensorEstimate) else None


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_the_defaults_are_the_documented_ones() -> None:
    assert BUDGET.max_tensor_bytes == 8 * GIB
    assert BUDGET.max_input_pixels == 8192 * 8192


def test_an_empty_image_of_192_gib_is_refused_naming_the_node() -> None:
    graph = {
        "1": empty_image(16384, 16384, 64),
        "2": node("ImageInvert", image=["1", 0]),
        "3": node("SaveImage", images=["2", 0], filename_prefix="x"),
    }

    [violation] = BUDGET.violations(parse_workflow(graph))

    assert (violation.field, violation.reason) == (
        'workflow["1"]',
        BudgetReason.NODE_OUTPUT_TOO_LARGE,
    )
    assert violation.description == (
        "EmptyImage would make a [64, 16384, 16384, 3] tensor (192 GiB);"
        " one node's output may take at most 8 GiB"
    )


def test_sizes_within_the_budget_pass() -> None:
    graph = {"1": empty_image(16384, 16384, 1), "2": node("SaveImage", images=["1", 0])}
    assert over(graph) == []
    assert over({"1": empty_image(16384, 16384, 2)}, ResourceBudget(max_tensor_bytes=GIB)) == [
        ('workflow["1"]', "NODE_OUTPUT_TOO_LARGE")
    ]


def test_shapes_flow_through_links_and_only_the_growing_node_is_named() -> None:
    graph = {
        "1": empty_image(1024, 1024, 1),
        "2": node("ImageScaleBy", image=["1", 0], upscale_method="bilinear", scale_by=8.0),
        "3": node("RepeatImageBatch", image=["2", 0], amount=64),
        "4": node("ImageBlur", image=["3", 0], blur_radius=1, sigma=1.0),
        "5": node("SaveImage", images=["4", 0]),
    }

    assert shape_of(graph, "2") == (1, 8192, 8192, 3)
    assert shape_of(graph, "4") == (64, 8192, 8192, 3)
    assert over(graph) == [('workflow["3"]', "NODE_OUTPUT_TOO_LARGE")]


def test_latents_and_video_latents_count_their_channels_and_frames() -> None:
    graph = {
        "1": node("EmptyLatentImage", width=1024, height=768, batch_size=2),
        "2": node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
        "3": node("EmptyHunyuanLatentVideo", width=1280, height=720, length=129, batch_size=1),
        "4": node("LatentUpscaleBy", samples=["1", 0], upscale_method="bilinear", scale_by=2.0),
        "5": node("RepeatLatentBatch", samples=["4", 0], amount=3),
    }

    assert shape_of(graph, "1") == (2, 4, 96, 128)
    assert shape_of(graph, "2") == (1, 16, 128, 128)
    assert shape_of(graph, "3") == (1, 16, 33, 90, 160)
    assert shape_of(graph, "5") == (6, 4, 192, 256)
    # The largest batch EmptyLatentImage takes at its largest size is 256 GiB.
    assert over({"1": node("EmptyLatentImage", width=16384, height=16384, batch_size=4096)})


def test_sizes_known_only_at_run_time_are_left_to_the_executor() -> None:
    graph = {
        "1": node("LoadImage", image="in.png"),
        "2": node("RepeatImageBatch", image=["1", 0], amount=4096),
        "3": node("ImageScaleBy", image=["2", 0], upscale_method="bilinear", scale_by=8.0),
    }
    assert shape_of(graph, "3") is None
    assert over(graph) == []


def test_a_resize_to_literal_sizes_is_at_least_one_image_of_that_size() -> None:
    graph = {
        "1": node("LoadImage", image="in.png"),
        "2": node(
            "ImageScale",
            image=["1", 0],
            upscale_method="bilinear",
            width=16384,
            height=16384,
            crop="disabled",
        ),
        "3": node(
            "ResizeAndPadImage",
            image=["1", 0],
            target_width=8,
            target_height=8,
            padding_color="white",
            interpolation="area",
        ),
    }
    assert shape_of(graph, "2") == (1, 16384, 16384, 3)
    assert shape_of(graph, "3") == (1, 8, 8, 3)


def test_integers_flow_from_primitives_and_image_sizes() -> None:
    graph = {
        "1": node("PrimitiveInt", value=16384),
        "2": node("EmptyImage", width=["1", 0], height=["1", 0], batch_size=64, color=0),
        "3": node("GetImageSize", image=["2", 0]),
        "4": node("SolidMask", value=1.0, width=["3", 0], height=["3", 1]),
    }
    assert shape_of(graph, "2") == (64, 16384, 16384, 3)
    assert shape_of(graph, "4") == (1, 16384, 16384)
    assert over(graph) == [('workflow["2"]', "NODE_OUTPUT_TOO_LARGE")]


def test_only_the_nodes_the_outputs_need_count() -> None:
    graph = {
        "1": empty_image(16384, 16384, 64),
        "2": empty_image(8, 8, 1),
        "3": node("SaveImage", images=["2", 0]),
    }
    assert BUDGET.violations(parse_workflow(graph), roots=["3"]) == []


def test_a_cycle_or_a_missing_node_leaves_sizes_unknown() -> None:
    graph = {
        "1": node("ImageInvert", image=["2", 0]),
        "2": node("RepeatImageBatch", image=["1", 0], amount=4096),
        "3": node("ImageInvert", image=["99", 0]),
    }
    assert estimate_outputs(parse_workflow(graph)) == {
        "1": (None,),
        "2": (None,),
        "3": (None,),
    }


def test_a_chain_of_ten_thousand_nodes_is_walked_without_recursion() -> None:
    graph: dict[str, Any] = {"0": empty_image(64, 64, 1)}
    for n in range(1, 10_000):
        graph[str(n)] = node("ImageInvert", image=[str(n - 1), 0])
    graph["10000"] = node("RepeatImageBatch", image=["9999", 0], amount=10_000_000)

    assert shape_of(graph, "9999") == (1, 64, 64, 3)
    assert over(graph) == [('workflow["10000"]', "NODE_OUTPUT_TOO_LARGE")]


def test_an_image_header_is_read_without_decoding() -> None:
    header = image_header(png((10000, 10000), "1"))
    assert header is not None
    assert (header.format, header.width, header.height) == ("PNG", 10000, 10000)
    assert image_header(b"not an image") is None


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png((10000, 10000), "1")
    assert len(bomb) < 16 * 1024  # 100 megapixels in a few KB

    assert BUDGET.input_image_problem(bomb) == (
        "is 10000x10000 pixels (100 megapixels) once decoded; at most 67.1 megapixels are taken"
    )
    assert BUDGET.input_image_problem(png((64, 64))) is None
    assert BUDGET.input_image_problem(b"a text file") is None


def test_an_image_beyond_pillows_own_bound_is_refused_with_its_answer() -> None:
    problem = ResourceBudget(max_input_pixels=10**12).input_image_problem(png((20000, 20000), "1"))
    assert problem is not None
    assert problem.startswith("is too large to decode: Image size (400000000 pixels)")


def test_sizes_read_in_binary_units() -> None:
    assert [format_bytes(n) for n in (512, 1536, 300 * 1024**2, 192 * GIB, 1536 * 1024**2)] == [
        "512 bytes",
        "1.5 KiB",
        "300 MiB",
        "192 GiB",
        "1.5 GiB",
    ]


def test_values_no_rule_expected_leave_the_size_unknown() -> None:
    graph = {
        "1": empty_image(64, 64, 1),
        "2": node("ImageScaleBy", image=["1", 0], upscale_method="bilinear", scale_by=1e308),
        "3": node(
            "ImageScaleToTotalPixels",
            image=["1", 0],
            upscale_method="area",
            megapixels=float("nan"),
        ),
    }
    assert shape_of(graph, "2") is None and shape_of(graph, "3") is None
    assert over(graph) == []
