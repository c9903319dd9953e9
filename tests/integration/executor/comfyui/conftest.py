"""The comfyui engine against the fake ComfyUI (in this process, or as a process it starts)
and against the real ComfyUI 0.3.64 (``real_engine``, see tests/support/real_comfyui.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from comfyfleet.workflow.runner import CancelToken
from services.executor.comfyui import ComfyUIEngine, ComfyUISettings
from services.executor.engine import EngineJob, EngineResult, NodeEvent, ProducedFile
from tests.support.fake_comfyui import Behaviour, RunningFake, running_fake
from tests.support.paths import REPO_ROOT, comfyui_ref
from tests.support.real_comfyui import STARTUP_TIMEOUT_S, RealComfyUI

# A run that hangs fails its test instead of the suite.
RUN_TIMEOUT_S = 20.0
# Quick enough for tests, slow enough not to fire while the fake answers at once.
FAST: dict[str, Any] = {
    "watchdog_s": 0.5,
    "poll_s": 0.05,
    "startup_timeout_s": 20.0,
    "interrupt_timeout_s": 5.0,
}


def fake_command(*flags: str) -> str:
    """The command line that starts the fake as a process, as COMFYFLEET_COMFYUI_COMMAND."""
    argv = ["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-m", "tests.support.fake_comfyui"]
    return shlex.join([*argv, *flags])


def workflow_text(name: str) -> str:
    return (comfyui_ref() / "workflows" / f"{name}.json").read_text()


def reference_file(run: str, name: str) -> bytes:
    return (comfyui_ref() / "reference" / run / name).read_bytes()


@dataclass
class Run:
    """One run's events and its result (or what it raised)."""

    events: list[NodeEvent] = field(default_factory=list)
    result: EngineResult | None = None


async def run_engine(
    engine: ComfyUIEngine,
    job: EngineJob,
    cancel: CancelToken | None = None,
    run: Run | None = None,
    timeout: float = RUN_TIMEOUT_S,  # noqa: ASYNC109
) -> Run:
    run = run or Run()
    token = cancel or CancelToken()
    async with asyncio.timeout(timeout):
        run.result = await asyncio.to_thread(engine.run, job, run.events.append, token)
    return run


def make_job(tmp_path: Path, workflow: str, inputs: dict[str, bytes] | None = None) -> EngineJob:
    input_dir = tmp_path / f"inputs-{len(list(tmp_path.glob('inputs-*')))}"
    input_dir.mkdir(parents=True)
    for name, data in (inputs or {}).items():
        (input_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (input_dir / name).write_bytes(data)
    return EngineJob(workflow, input_dir)


StartEngine = Callable[..., contextlib.AbstractAsyncContextManager[ComfyUIEngine]]


@pytest.fixture
def start_engine(tmp_path: Path) -> StartEngine:
    """``async with start_engine(url=... | command=..., **settings) as engine``: started, closed."""

    @contextlib.asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[ComfyUIEngine]:
        engine = ComfyUIEngine(ComfyUISettings(**(FAST | settings)), "cpu", tmp_path / "engine")
        try:
            await asyncio.to_thread(engine.start)
            yield engine
        finally:
            await asyncio.to_thread(engine.close)

    return start


StartFake = Callable[..., contextlib.AbstractAsyncContextManager[RunningFake]]


@pytest.fixture
def start_fake(tmp_path: Path) -> StartFake:
    """``async with start_fake(**behaviour) as fake``: the fake on this event loop."""

    def start(**behaviour: Any) -> contextlib.AbstractAsyncContextManager[RunningFake]:
        return running_fake(tmp_path / "fake", Behaviour(**behaviour))

    return start


@pytest.fixture
async def fake(start_fake: StartFake) -> AsyncIterator[RunningFake]:
    async with start_fake() as running:
        yield running


@pytest.fixture
async def engine(fake: RunningFake, start_engine: StartEngine) -> AsyncIterator[ComfyUIEngine]:
    async with start_engine(url=fake.url) as started:
        yield started


# ------------------------------------------------------------------ the real ComfyUI

# A real run may restart ComfyUI first (seconds to a minute on a busy machine).
REAL_RUN_TIMEOUT_S = STARTUP_TIMEOUT_S + 60.0


def real_settings(real: RealComfyUI, **settings: Any) -> ComfyUISettings:
    """A started-mode engine's settings for the real ComfyUI."""
    base: dict[str, Any] = {
        "command": real.command(),
        "startup_timeout_s": STARTUP_TIMEOUT_S,
        "poll_s": 0.2,
    }
    return ComfyUISettings(**(base | settings))


@pytest.fixture(scope="module")
def real_engine(
    real_comfyui: RealComfyUI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComfyUIEngine]:
    """One started real ComfyUI per test module (a start takes seconds), closed after."""
    engine = ComfyUIEngine(real_settings(real_comfyui), "cpu", tmp_path_factory.mktemp("comfyui"))
    try:
        engine.start()
        yield engine
    finally:
        engine.close()


def pixels_sha256(png: bytes) -> str:
    """What a reference result.json records of an image: the sha256 of its raw pixels."""
    return hashlib.sha256(Image.open(io.BytesIO(png)).tobytes()).hexdigest()


def assert_matches_reference(
    files: Sequence[ProducedFile],
    reference_dir: Path,
    pixel_tolerance: int = 0,
    *,
    same_prompt: bool = True,
) -> None:
    """``files`` are what ComfyUI produced in ``reference_dir`` (its result.json): the same
    files of the same nodes, latents byte for byte, images with the recorded raw-pixel sha256.

    With ``pixel_tolerance``, an image whose sha256 differs may still differ from the reference
    image by at most that much (of 255) in at most 1% of its values. ``same_prompt``: the
    prompt stored in each PNG is the reference's too.
    """
    listed = json.loads((reference_dir / "result.json").read_text())["files"]
    # "node9_images_1.png": the node's second file.
    expected = sorted(listed, key=lambda e: (e["node"], int(Path(e["file"]).stem.split("_")[-1])))
    ordered = sorted(files, key=lambda f: (f.node_id, f.filename))
    got = [(f.node_id, f.kind) for f in ordered]
    assert got == [(e["node"], e["kind"]) for e in expected], ordered
    for file, entry in zip(ordered, expected, strict=True):
        reference = (reference_dir / entry["file"]).read_bytes()
        if entry["kind"] == "latents":
            assert file.data == reference, f"{file.filename} differs from {entry['file']}"
            continue
        image = Image.open(io.BytesIO(file.data))
        assert (list(image.size), image.mode) == (entry["size"], entry["mode"])
        if same_prompt:
            prompt = json.loads(image.info["prompt"])
            assert prompt == json.loads(Image.open(io.BytesIO(reference)).info["prompt"])
        if pixels_sha256(file.data) == entry["pixels_sha256"]:
            continue
        ours = np.asarray(image).astype(np.int16)
        theirs = np.asarray(Image.open(io.BytesIO(reference))).astype(np.int16)
        worst, differing = int(np.abs(ours - theirs).max()), int((ours != theirs).sum())
        assert worst <= pixel_tolerance and differing <= ours.size // 100, (
            f"{file.filename}: {differing} of {ours.size} values differ, by up to {worst}/255"
        )
