"""The comfyui engine driving the real ComfyUI 0.3.64: a process it starts (one per module),
and a server it reaches by URL. Its results are the reference outputs that same ComfyUI made.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from dataclasses import replace
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2
from PIL import Image

from comfyfleet.workflow.runner import CancelToken
from services.executor.attempt import failure_of
from services.executor.comfyui import ComfyUIEngine, ComfyUISettings, ComfyUIUnavailable
from services.executor.engine import EngineJob, NodeState, RunInterrupted
from tests.integration.executor.comfyui.conftest import (
    REAL_RUN_TIMEOUT_S,
    Run,
    assert_matches_reference,
    run_engine,
    workflow_text,
)
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref
from tests.support.real_comfyui import RealComfyUI, RunningComfyUI

REAL_WORKFLOWS = ["t01_txt2img", "t02_img2img", "t03_batch_ancestral"]
REFERENCE_WORKFLOWS = [
    "r01_invert",
    "r02_blur_scale",
    "r03_scale_crop_center",
    "r04_sharpen_flip",
    "r05_composite_feathered",
    "r06_crop_rotate",
    "r07_blend_multiply",
    "r08_latent",
    "r09_batch",
    "r10_pad_outpaint_mask",
]
# t01's sampler. A seed no other run of the session used keeps ComfyUI's cache out of a test.
KSAMPLER = "3"
_seeds = count(1000)
# At ~25 steps/s on a CPU, long enough to still be sampling when the test acts.
LONG_STEPS = 400
# The sampled images are deterministic on one machine, yet a ComfyUI on another CPU than the
# one that made the references (same ComfyUI, torch and checkpoint) lands a few values (7 of
# t01's 12288 here, whatever the thread count or ISA) one step off; nothing else differs.
SAMPLED_TOLERANCE = 1


def job_of(tmp_path: Path, workflow: str, models: dict[str, Path] | None = None) -> EngineJob:
    """A job with every reference input (the t02 and r workflows load shapes.png)."""
    input_dir = tmp_path / f"inputs-{len(list(tmp_path.glob('inputs-*')))}"
    input_dir.mkdir(parents=True)
    for image in (comfyui_ref() / "inputs").iterdir():
        (input_dir / image.name).write_bytes(image.read_bytes())
    return EngineJob(workflow, input_dir, models or {})


def sampling(real: RealComfyUI, steps: int) -> str:
    """t01 with its sampler set to ``steps`` and a fresh seed."""
    prompt: dict[str, Any] = json.loads(real.workflow("t01_txt2img"))
    prompt[KSAMPLER]["inputs"] |= {"steps": steps, "seed": next(_seeds)}
    return json.dumps(prompt)


async def real_run(
    engine: ComfyUIEngine, job: EngineJob, cancel: CancelToken | None = None, run: Run | None = None
) -> Run:
    return await run_engine(engine, job, cancel, run, timeout=REAL_RUN_TIMEOUT_S)


def progress(run: Run, node_id: str) -> list[tuple[int, int]]:
    return [
        (e.value, e.max)
        for e in run.events
        if e.state == NodeState.PROGRESS and e.node_id == node_id
    ]


async def until_sampling(run: Run) -> None:
    """Until the sampler reported its first step (the model loads first: seconds)."""

    async def sampler_stepped() -> None:
        assert progress(run, KSAMPLER)

    await eventually(sampler_stepped, timeout=REAL_RUN_TIMEOUT_S)


@pytest.mark.parametrize("name", REAL_WORKFLOWS)
async def test_diffusion_workflows_give_the_reference_images(
    name: str, real_engine: ComfyUIEngine, real_comfyui: RealComfyUI, tmp_path: Path
) -> None:
    job = job_of(tmp_path, real_comfyui.workflow(name), real_comfyui.models)

    run = await real_run(real_engine, job)

    assert run.result is not None
    assert_matches_reference(run.result.files, real_comfyui.reference_dir(name), SAMPLED_TOLERANCE)
    # Every node ran, or came from ComfyUI's cache (the checkpoint an earlier test loaded).
    ended = [e.node_id for e in run.events if e.state in (NodeState.DONE, NodeState.CACHED)]
    assert sorted(ended) == sorted(json.loads(job.workflow_json))


async def test_the_sampler_reports_every_step(
    real_engine: ComfyUIEngine, real_comfyui: RealComfyUI, tmp_path: Path
) -> None:
    job = job_of(tmp_path, sampling(real_comfyui, 20), real_comfyui.models)

    run = await real_run(real_engine, job)

    assert progress(run, KSAMPLER) == [(step, 20) for step in range(1, 21)]
    # Every progress event falls between the sampler's start and its end.
    states = [(e.state, e.node_id) for e in run.events]
    first = states.index((NodeState.PROGRESS, KSAMPLER))
    assert states.index((NodeState.RUNNING, KSAMPLER)) < first
    assert states.index((NodeState.DONE, KSAMPLER)) > len(states) - 1 - states[::-1].index(
        (NodeState.PROGRESS, KSAMPLER)
    )


@pytest.mark.parametrize("name", REFERENCE_WORKFLOWS)
async def test_reference_workflows_give_the_reference_outputs(
    name: str, real_engine: ComfyUIEngine, tmp_path: Path
) -> None:
    run = await real_run(real_engine, job_of(tmp_path, workflow_text(name)))

    assert run.result is not None
    assert_matches_reference(run.result.files, comfyui_ref() / "reference" / name)


async def test_a_url_mode_engine_uploads_the_input_and_gives_the_reference_image(
    comfyui_server: RunningComfyUI, real_comfyui: RealComfyUI, tmp_path: Path
) -> None:
    engine = ComfyUIEngine(ComfyUISettings(url=comfyui_server.url), "cpu", tmp_path / "engine")
    await asyncio.to_thread(engine.start)
    # URL mode: the server holds the models itself; the job links none.
    job = job_of(tmp_path, real_comfyui.workflow("t02_img2img"))

    run = await real_run(engine, job)

    assert run.result is not None
    reference = real_comfyui.reference_dir("t02_img2img")
    # The PNG embeds the prompt as submitted (the input by its own name), as the reference's.
    assert_matches_reference(run.result.files, reference, SAMPLED_TOLERANCE)
    uploaded = [p.name for p in comfyui_server.input_dir.rglob("*") if p.is_file()]
    assert "shapes.png" in uploaded
    # ComfyUI saved the file in the job's scope folder; the engine hands on its pixels.
    [file] = run.result.files
    folder = comfyui_server.output_dir / engine.output_folder(job.cache_scope) / file.subfolder
    saved = Image.open(folder / file.filename)
    assert saved.tobytes() == Image.open(io.BytesIO(file.data)).tobytes()


async def test_a_cancel_mid_sampling_stops_the_run_within_a_second(
    real_engine: ComfyUIEngine, real_comfyui: RealComfyUI, tmp_path: Path
) -> None:
    process = real_engine.process
    assert process is not None
    pid = process.pid
    cancel, run = CancelToken(), Run()
    job = job_of(tmp_path, sampling(real_comfyui, LONG_STEPS), real_comfyui.models)
    task = asyncio.create_task(real_run(real_engine, job, cancel, run))
    await until_sampling(run)

    cancelled_at = time.monotonic()
    cancel.cancel()
    with pytest.raises(RunInterrupted):
        await task
    assert time.monotonic() - cancelled_at < 1.0
    assert progress(run, KSAMPLER)[-1][0] < LONG_STEPS

    # ComfyUI honoured the interrupt: the same process runs the next job.
    following = await real_run(
        real_engine, job_of(tmp_path, sampling(real_comfyui, 3), real_comfyui.models)
    )
    assert following.result is not None and len(following.result.files) == 1
    assert process.pid == pid


async def test_kill_9_mid_run_is_unavailable_and_the_next_run_restarts_comfyui(
    real_engine: ComfyUIEngine, real_comfyui: RealComfyUI, tmp_path: Path
) -> None:
    process = real_engine.process
    assert process is not None and process.pid is not None
    pid, url = process.pid, real_engine.base_url
    run = Run()
    job = job_of(tmp_path, sampling(real_comfyui, LONG_STEPS), real_comfyui.models)
    task = asyncio.create_task(real_run(real_engine, job, run=run))
    await until_sampling(run)

    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ComfyUIUnavailable, match="exited with code -9") as raised:
        await task
    failure = failure_of(raised.value)
    assert failure.retryable and failure.code == code_pb2.UNAVAILABLE

    # A fresh ComfyUI (nothing cached) gives t01's reference image again.
    again = await real_run(
        real_engine,
        replace(job_of(tmp_path, real_comfyui.workflow("t01_txt2img")), models=real_comfyui.models),
    )
    assert again.result is not None
    reference = real_comfyui.reference_dir("t01_txt2img")
    assert_matches_reference(again.result.files, reference, SAMPLED_TOLERANCE)
    assert process.pid != pid and real_engine.base_url != url
