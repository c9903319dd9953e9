"""Cancellation inside long node loops: a cancelled run stops in the middle of the node."""

from __future__ import annotations

import time
from typing import Any

import pytest

from comfyfleet.workflow.io import MemoryInputStore, MemoryOutputSink
from comfyfleet.workflow.runner import CancelToken, RunStatus
from services.executor.native import NativeEngine


class CancelAtPoll(CancelToken):
    """Cancels itself at its ``at``-th poll from node code (``ctx.check_cancelled``)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.polls = 0

    def raise_if_cancelled(self) -> None:
        self.polls += 1
        if self.polls == self.at:
            self.cancel()
        super().raise_if_cancelled()


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


WHITE = node("EmptyImage", width=64, height=64, batch_size=8, color=0xFFFFFF)
SAVE = node("SaveImage", images=["loop", 0], filename_prefix="cancel")

# Each workflow's node "loop" loops for long (GrowMask: 16384 steps) or over a batch.
LOOPS: dict[str, dict[str, dict[str, Any]]] = {
    "GrowMask": {
        "mask": node("SolidMask", value=0.0, width=256, height=256),
        "loop": node("GrowMask", mask=["mask", 0], expand=16384, tapered_corners=True),
        "out": node("MaskToImage", mask=["loop", 0]),
        "save": node("SaveImage", images=["out", 0], filename_prefix="cancel"),
    },
    "ImageQuantize": {
        "img": WHITE,
        "loop": node("ImageQuantize", image=["img", 0], colors=16, dither="floyd-steinberg"),
        "save": SAVE,
    },
    "PorterDuffImageComposite": {
        "img": WHITE,
        "mask": node("ImageToMask", image=["img", 0], channel="red"),
        "loop": node(
            "PorterDuffImageComposite",
            source=["img", 0],
            source_alpha=["mask", 0],
            destination=["img", 0],
            destination_alpha=["mask", 0],
            mode="SRC_OVER",
        ),
        "save": SAVE,
    },
    "SaveImage": {
        "img": WHITE,
        "loop": node("ImageInvert", image=["img", 0]),
        "save": SAVE,
    },
}


@pytest.mark.parametrize("looping", sorted(LOOPS))
def test_a_cancel_stops_a_long_node_loop_where_it_is(looping: str) -> None:
    workflow = LOOPS[looping]
    token = CancelAtPoll(at=2)
    sink = MemoryOutputSink()
    started = time.perf_counter()

    result = NativeEngine("cpu").run(workflow, MemoryInputStore(), sink, cancel=token)

    assert result.status is RunStatus.CANCELLED
    # It stopped at the very poll that saw the cancel, inside the looping node, which never
    # finished (SaveImage had written its first image of eight).
    assert token.polls == 2
    looped = "save" if looping == "SaveImage" else "loop"
    assert looped not in result.executed_nodes
    assert len(sink.files) == (1 if looping == "SaveImage" else 0)
    assert time.perf_counter() - started < 5


def test_growmask_without_a_cancel_runs_every_step() -> None:
    token = CancelAtPoll(at=0)  # never cancels: counts the polls
    workflow = {
        "mask": node("SolidMask", value=0.0, width=8, height=8),
        "loop": node("GrowMask", mask=["mask", 0], expand=-300, tapered_corners=False),
        "out": node("MaskToImage", mask=["loop", 0]),
        "save": node("SaveImage", images=["out", 0], filename_prefix="all"),
    }

    result = NativeEngine("cpu").run(workflow, MemoryInputStore(), MemoryOutputSink(), cancel=token)

    assert result.status is RunStatus.SUCCEEDED
    # One poll per step of GrowMask, one per saved image.
    assert token.polls == 300 + 1
