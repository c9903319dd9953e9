"""The comfyui engine against the fake ComfyUI: in this process, or as a process it starts."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.workflow.runner import CancelToken
from services.executor.comfyui import ComfyUIEngine, ComfyUISettings
from services.executor.engine import EngineJob, EngineResult, NodeEvent
from tests.support.fake_comfyui import Behaviour, RunningFake, running_fake
from tests.support.paths import REPO_ROOT, comfyui_ref

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
    engine: ComfyUIEngine, job: EngineJob, cancel: CancelToken | None = None, run: Run | None = None
) -> Run:
    run = run or Run()
    token = cancel or CancelToken()
    async with asyncio.timeout(RUN_TIMEOUT_S):
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
