"""Resource bounds of one execution: what a node's output tensor takes, and how large an input
image is once decoded, known before anything runs wherever the sizes are.

A workflow names sizes as plain numbers (``EmptyImage`` 16384 x 16384 with a batch of 64 is a
192 GiB float tensor), and an input file can decode to far more than it weighs (a PNG of a few
KB can hold 10000 x 10000 pixels). Neither may reach an executor's memory: an allocation that
cannot fit kills the process (the kernel's OOM killer), which would send the execution round
the retry loop, killing one executor per attempt. So:

* the gateway estimates, from literal sizes, the output tensor of each node of the native
  node types that create or grow tensors (:func:`estimate_outputs`, rules per node type, with
  the shapes flowing between them) and refuses a node whose output exceeds
  :attr:`ResourceBudget.max_tensor_bytes`, naming the node;
* an input image whose header says it decodes to more than
  :attr:`ResourceBudget.max_input_pixels` is refused: by the gateway when it arrives inline, by
  the executor's loaders (before decoding) otherwise;
* the native engine checks each allocation whose size comes through links against its own
  memory budget and raises :class:`BudgetExceeded`, a workflow error that is never retried.

=================================  ================================  =========================
limit                              default                           where
=================================  ================================  =========================
one node's output tensor           8 GiB (float32: 4 bytes/element)  gateway (literal sizes)
input image, decoded               67,108,864 pixels (8192 x 8192)   gateway (inline inputs),
                                   per frame                         executor (every input)
one allocation of a native run     the executor's memory budget      executor
=================================  ================================  =========================

Estimates are lower bounds: a size the rules cannot know (a loaded image, a node type without
a rule) is left to the executor's checks.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from comfyfleet.workflow.graph import Link, Workflow
from comfyfleet.workflow.validate import FieldViolation, field_path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
FLOAT32_BYTES = 4


class BudgetReason(StrEnum):
    """The ``reason`` of each kind of violation or failure."""

    NODE_OUTPUT_TOO_LARGE = "NODE_OUTPUT_TOO_LARGE"
    INPUT_IMAGE_TOO_LARGE = "INPUT_IMAGE_TOO_LARGE"


class BudgetExceeded(Exception):
    """An allocation the run's budget does not allow, raised instead of making it.

    A workflow error (the same workflow fails the same way anywhere): executors report it as
    a node failure that is never retried.
    """


class InputImageTooLarge(BudgetExceeded):
    """An input image that would decode to more pixels than allowed."""


def format_bytes(size: int) -> str:
    """``192 GiB``, ``1.5 GiB``, ``300 MiB``: binary units, at most one decimal."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale:
            value = size / scale
            text = f"{value:.1f}".removesuffix(".0") if value < 100 else f"{value:.0f}"
            return f"{text} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True, slots=True)
class TensorEstimate:
    """The shape of a tensor a node makes, and the size of one element."""

    shape: tuple[int, ...]
    element_bytes: int = FLOAT32_BYTES

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * self.element_bytes

    def describe(self) -> str:
        """``a [64, 16384, 16384, 3] tensor (192 GiB)``."""
        return f"a {list(self.shape)} tensor ({format_bytes(self.nbytes)})"


# --------------------------------------------------------------------------- shape rules
#
# An IMAGE is [B, H, W, C], a MASK [B, H, W], a LATENT's samples [B, C, H/8, W/8] (video:
# [B, C, T, H/8, W/8]). A rule gets the node's inputs, each a literal, the estimate of the
# linked output, or None (unknown), and returns the node's outputs, None where unknown.

Inputs = Mapping[str, Any]
Outputs = tuple[Any, ...]
Rule = Callable[[Inputs], Outputs]
_RULES: dict[str, Rule] = {}


def _rule(*class_types: str) -> Callable[[Rule], Rule]:
    def register(rule: Rule) -> Rule:
        for class_type in class_types:
            _RULES[class_type] = rule
        return rule

    return register


def _ints(inputs: Inputs, *names: str) -> tuple[int, ...] | None:
    """The named inputs when every one is a known integer, else None."""
    values: list[int] = []
    for name in names:
        value = inputs.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        values.append(value)
    return tuple(values)


def _number(inputs: Inputs, name: str) -> float | None:
    value = inputs.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _tensor(inputs: Inputs, name: str, rank: int | None = None) -> TensorEstimate | None:
    value = inputs.get(name)
    if isinstance(value, TensorEstimate) and (rank is None or len(value.shape) == rank):
        return value
    return None


def _shaped(*shape: int) -> TensorEstimate | None:
    """A tensor of ``shape``, or None when a dimension is not positive (the node fails, or
    makes nothing, whatever its size)."""
    return TensorEstimate(tuple(shape)) if all(d > 0 for d in shape) else None


@_rule("EmptyImage")
def _empty_image(inputs: Inputs) -> Outputs:
    sizes = _ints(inputs, "width", "height", "batch_size")
    return (_shaped(sizes[2], sizes[1], sizes[0], 3) if sizes else None,)


def _empty_latent(channels: int, factor: int) -> Rule:
    """An empty latent of ``channels`` at ``1 / factor`` of the pixel size."""

    def rule(inputs: Inputs) -> Outputs:
        sizes = _ints(inputs, "width", "height", "batch_size")
        if sizes is None:
            return (None,)
        width, height, batch = sizes
        return (_shaped(batch, channels, height // factor, width // factor),)

    return rule


def _empty_video_latent(channels: int, per_frame: int, factor: int) -> Rule:
    """An empty video latent: ``per_frame`` video frames to a latent frame (the first alone)."""

    def rule(inputs: Inputs) -> Outputs:
        sizes = _ints(inputs, "width", "height", "length", "batch_size")
        if sizes is None:
            return (None,)
        width, height, length, batch = sizes
        frames = (length - 1) // per_frame + 1
        return (_shaped(batch, channels, frames, height // factor, width // factor),)

    return rule


_rule("EmptyLatentImage")(_empty_latent(4, 8))
_rule("EmptySD3LatentImage")(_empty_latent(16, 8))
_rule("EmptyHunyuanImageLatent")(_empty_latent(64, 32))
_rule("EmptyHunyuanLatentVideo")(_empty_video_latent(16, 4, 8))
_rule("EmptyMochiLatentVideo")(_empty_video_latent(12, 6, 8))
_rule("EmptyLTXVLatentVideo")(_empty_video_latent(128, 8, 32))
_rule("EmptyCosmosLatentVideo")(_empty_video_latent(16, 8, 8))


@_rule("SolidMask")
def _solid_mask(inputs: Inputs) -> Outputs:
    sizes = _ints(inputs, "width", "height")
    return (_shaped(1, sizes[1], sizes[0]) if sizes else None,)


def _image_sized(image: TensorEstimate | None, width: int, height: int) -> TensorEstimate | None:
    """An image batch resized to ``width x height`` (a batch of one RGB image at least)."""
    batch, channels = (image.shape[0], image.shape[3]) if image is not None else (1, 3)
    return _shaped(batch, height, width, channels)


@_rule("ImageScale")
def _image_scale(inputs: Inputs) -> Outputs:
    image = _tensor(inputs, "image", 4)
    sizes = _ints(inputs, "width", "height")
    if sizes is None:
        return (None,)
    width, height = sizes
    if width == 0 and height == 0:
        return (image,)
    if width == 0 or height == 0:
        if image is None:
            return (None,)
        old_h, old_w = image.shape[1], image.shape[2]
        width = width or max(1, round(old_w * height / old_h))
        height = height or max(1, round(old_h * width / old_w))
    return (_image_sized(image, width, height),)


@_rule("ImageScaleBy")
def _image_scale_by(inputs: Inputs) -> Outputs:
    image, scale = _tensor(inputs, "image", 4), _number(inputs, "scale_by")
    if image is None or scale is None:
        return (None,)
    batch, height, width, channels = image.shape
    return (_shaped(batch, round(height * scale), round(width * scale), channels),)


@_rule("ImageScaleToTotalPixels")
def _image_scale_to_total_pixels(inputs: Inputs) -> Outputs:
    image, megapixels = _tensor(inputs, "image", 4), _number(inputs, "megapixels")
    if image is None or megapixels is None:
        return (None,)
    batch, height, width, channels = image.shape
    scale = math.sqrt(int(megapixels * 1024 * 1024) / (width * height))
    return (_shaped(batch, round(height * scale), round(width * scale), channels),)


@_rule("ImageScaleToMaxDimension")
def _image_scale_to_max_dimension(inputs: Inputs) -> Outputs:
    image, largest = _tensor(inputs, "image", 4), _ints(inputs, "largest_size")
    if image is None or largest is None:
        return (None,)
    batch, height, width, channels = image.shape
    longest = largest[0]
    if height > width:
        width, height = round(width / height * longest), longest
    elif width > height:
        width, height = longest, round(height / width * longest)
    else:
        width = height = longest
    return (_shaped(batch, height, width, channels),)


@_rule("ResizeAndPadImage")
def _resize_and_pad_image(inputs: Inputs) -> Outputs:
    sizes = _ints(inputs, "target_width", "target_height")
    if sizes is None:
        return (None,)
    return (_image_sized(_tensor(inputs, "image", 4), *sizes),)


@_rule("ImagePadForOutpaint")
def _image_pad_for_outpaint(inputs: Inputs) -> Outputs:
    image, pads = _tensor(inputs, "image", 4), _ints(inputs, "left", "top", "right", "bottom")
    if image is None or pads is None:
        return (None, None)
    batch, height, width, channels = image.shape
    left, top, right, bottom = pads
    new_height, new_width = height + top + bottom, width + left + right
    return _shaped(batch, new_height, new_width, channels), _shaped(1, new_height, new_width)


@_rule("RepeatImageBatch")
def _repeat_image_batch(inputs: Inputs) -> Outputs:
    return (_repeated(_tensor(inputs, "image"), inputs),)


@_rule("RepeatLatentBatch")
def _repeat_latent_batch(inputs: Inputs) -> Outputs:
    return (_repeated(_tensor(inputs, "samples"), inputs),)


def _repeated(tensor: TensorEstimate | None, inputs: Inputs) -> TensorEstimate | None:
    amount = _ints(inputs, "amount")
    if tensor is None or amount is None:
        return None
    return _shaped(tensor.shape[0] * amount[0], *tensor.shape[1:])


@_rule("ImageBatch")
def _image_batch(inputs: Inputs) -> Outputs:
    return (_batched(_tensor(inputs, "image1"), _tensor(inputs, "image2")),)


@_rule("LatentBatch")
def _latent_batch(inputs: Inputs) -> Outputs:
    return (_batched(_tensor(inputs, "samples1"), _tensor(inputs, "samples2")),)


def _batched(first: TensorEstimate | None, second: TensorEstimate | None) -> TensorEstimate | None:
    """Two batches joined, the second resized to the first's size."""
    if first is None or second is None or len(first.shape) != len(second.shape):
        return None
    return _shaped(first.shape[0] + second.shape[0], *first.shape[1:])


@_rule("LatentUpscale")
def _latent_upscale(inputs: Inputs) -> Outputs:
    samples = _tensor(inputs, "samples", 4)
    sizes = _ints(inputs, "width", "height")
    if sizes is None or (sizes[0] == 0) != (sizes[1] == 0):
        return (None,)
    if sizes == (0, 0):
        return (samples,)
    width, height = max(64, sizes[0]), max(64, sizes[1])
    batch, channels = (samples.shape[0], samples.shape[1]) if samples is not None else (1, 4)
    return (_shaped(batch, channels, height // 8, width // 8),)


@_rule("LatentUpscaleBy")
def _latent_upscale_by(inputs: Inputs) -> Outputs:
    samples, scale = _tensor(inputs, "samples", 4), _number(inputs, "scale_by")
    if samples is None or scale is None:
        return (None,)
    batch, channels, height, width = samples.shape
    return (_shaped(batch, channels, round(height * scale), round(width * scale)),)


def _same_as(name: str) -> Rule:
    """The output has the shape of input ``name`` (filters, blends, flips ...)."""

    def rule(inputs: Inputs) -> Outputs:
        return (_tensor(inputs, name),)

    return rule


for _input, _types in {
    "image": (
        "ImageInvert ImageBlur ImageSharpen ImageAddNoise ImageQuantize Morphology Canny "
        "ImageFlip ImageRotate"
    ),
    "image1": "ImageBlend",
    "destination": "ImageCompositeMasked",
    "samples": "LatentFlip LatentRotate LatentMultiply LatentBatchSeedBehavior SetLatentNoiseMask",
    "samples1": "LatentAdd LatentSubtract LatentInterpolate LatentBlend",
    "samples_to": "LatentComposite",
}.items():
    _rule(*_types.split())(_same_as(_input))


@_rule("GetImageSize")
def _get_image_size(inputs: Inputs) -> Outputs:
    image = _tensor(inputs, "image", 4)
    if image is None:
        return (None, None, None)
    return image.shape[2], image.shape[1], image.shape[0]


@_rule("PrimitiveInt")
def _primitive_int(inputs: Inputs) -> Outputs:
    return (inputs.get("value"),)


# --------------------------------------------------------------------------- the graph


def estimate_outputs(workflow: Workflow, roots: Iterable[str] | None = None) -> dict[str, Outputs]:
    """Each node's estimated outputs (a :class:`TensorEstimate`, an int, or None per slot),
    for the nodes ``roots`` (default: every node) depend on.

    Nodes without a rule, and what only they feed, are absent. The walk is iterative (graphs
    of any depth) and a dependency cycle leaves its nodes unknown.
    """
    found: dict[str, Outputs] = {}
    visited: set[str] = set()
    for root in roots if roots is not None else workflow:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            node_id, ready = stack.pop()
            if ready:
                estimate = _estimate_node(workflow, node_id, found)
                if estimate is not None:
                    found[node_id] = estimate
                continue
            if node_id in visited or node_id not in workflow:
                continue
            visited.add(node_id)
            stack.append((node_id, True))
            stack.extend((link.node_id, False) for _, link in workflow[node_id].links())
    return found


def _estimate_node(
    workflow: Workflow, node_id: str, found: Mapping[str, Outputs]
) -> Outputs | None:
    node = workflow[node_id]
    rule = _RULES.get(node.class_type or "")
    if rule is None:
        return None
    inputs: dict[str, Any] = {}
    for name, value in node.inputs.items():
        if isinstance(value, Link):
            upstream = found.get(value.node_id, ())
            inputs[name] = (
                upstream[value.output_index] if value.output_index < len(upstream) else None
            )
        else:
            inputs[name] = value
    try:
        return rule(inputs)
    except (ArithmeticError, ValueError, TypeError):
        # Values validation let through that no rule expected (a catalog without bounds):
        # the size is unknown here, and the executor's checks still apply.
        return None


# --------------------------------------------------------------------------- input images


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image file's header says it decodes to (per frame). ``refused`` is Pillow's
    own answer when the size is beyond even its decompression-bomb bound."""

    format: str
    width: int
    height: int
    refused: str = ""

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_header(data: bytes) -> ImageHeader | None:
    """The format and size an image file declares, read without decoding its pixels; None
    when Pillow does not recognise it as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow warns about (and past twice its bound refuses) large images on opening;
        # the caller decides with its own bound.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return ImageHeader(image.format or "", image.width, image.height)
    except Image.DecompressionBombError as err:
        return ImageHeader("", 0, 0, refused=str(err))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


# --------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class ResourceBudget:
    """What one execution may ask for before it runs (the module's table says why)."""

    max_tensor_bytes: int = 8 * GIB
    max_input_pixels: int = 8192 * 8192
    # One violation per oversized node is plenty; a graph could have thousands.
    max_violations: int = 100

    def violations(
        self, workflow: Workflow, roots: Iterable[str] | None = None
    ) -> list[FieldViolation]:
        """A violation for each node (that ``roots`` need) whose estimated output exceeds
        ``max_tensor_bytes`` and is larger than every input it was made from: the node that
        makes the oversized tensor, not each node it flows through."""
        estimates = estimate_outputs(workflow, roots)
        found: list[FieldViolation] = []
        for node_id, outputs in estimates.items():
            largest = max(_tensors(outputs), key=lambda t: t.nbytes, default=None)
            if largest is None or largest.nbytes <= self.max_tensor_bytes:
                continue
            if largest.nbytes <= _largest_input(workflow, node_id, estimates):
                continue
            found.append(self._too_large(node_id, workflow[node_id].class_type or "", largest))
            if len(found) >= self.max_violations:
                break
        return found

    def _too_large(self, node_id: str, class_type: str, tensor: TensorEstimate) -> FieldViolation:
        return FieldViolation(
            field_path(node_id),
            f"{class_type} would make {tensor.describe()}; one node's output may take at most"
            f" {format_bytes(self.max_tensor_bytes)}",
            BudgetReason.NODE_OUTPUT_TOO_LARGE,
        )

    def input_image_problem(self, data: bytes) -> str | None:
        """Why ``data``, when it is an image, decodes to too many pixels; None when it is
        within the budget or not an image."""
        header = image_header(data)
        return self.header_problem(header) if header is not None else None

    def header_problem(self, header: ImageHeader) -> str | None:
        """Why an image of this header is too large to decode, or None."""
        return decoded_size_problem(header, self.max_input_pixels)


RESOURCE_BUDGET = ResourceBudget()
"""The budget the gateway applies when none is configured."""


def decoded_size_problem(header: ImageHeader, max_pixels: int) -> str | None:
    """Why an image of this header decodes to more than ``max_pixels`` per frame, or None."""
    if header.refused:
        return f"is too large to decode: {header.refused}"
    if header.pixels <= max_pixels:
        return None
    return (
        f"is {header.width}x{header.height} pixels ({_megapixels(header.pixels)} megapixels)"
        f" once decoded; at most {_megapixels(max_pixels)} megapixels are taken"
    )


def _tensors(outputs: Sequence[Any]) -> list[TensorEstimate]:
    return [o for o in outputs if isinstance(o, TensorEstimate)]


def _largest_input(workflow: Workflow, node_id: str, estimates: Mapping[str, Outputs]) -> int:
    largest = 0
    for _, link in workflow[node_id].links():
        upstream = estimates.get(link.node_id, ())
        if link.output_index < len(upstream):
            value = upstream[link.output_index]
            if isinstance(value, TensorEstimate):
                largest = max(largest, value.nbytes)
    return largest


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.1f}".removesuffix(".0")
