"""The comfyui engine starting and supervising ComfyUI (the fake, as a real process)."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from comfyfleet.workflow.runner import CancelToken
from services.executor.attempt import failure_of
from services.executor.comfyui import ComfyUIUnavailable
from services.executor.comfyui.process import MODEL_FOLDERS, ComfyUIProcess
from services.executor.engine import NodeState, RunInterrupted
from tests.integration.executor.comfyui.conftest import (
    Run,
    StartEngine,
    fake_command,
    make_job,
    reference_file,
    run_engine,
    workflow_text,
)
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref

SHAPES = (comfyui_ref() / "inputs" / "shapes.png").read_bytes()


async def test_a_started_comfyui_that_loads_slowly_runs_r01(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with start_engine(command=fake_command("--fake-refuse-for", "1.0")) as engine:
        assert time.monotonic() - started >= 1.0
        process = engine.process
        assert process is not None and process.exit_code() is None
        job = make_job(tmp_path, workflow_text("r01_invert"), {"shapes.png": SHAPES})

        run = await run_engine(engine, job)

        assert run.result is not None
        assert run.result.files[0].data == reference_file("r01_invert", "node3_images_0.png")
        assert (process.input_dir / "shapes.png").read_bytes() == SHAPES
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{engine.base_url}/system_stats") as response,
        ):
            argv = (await response.json())["system"]["argv"]
        assert argv[argv.index("--input-directory") + 1] == str(process.input_dir)
        assert argv[argv.index("--output-directory") + 1] == str(process.output_dir)
        assert "--cpu" in argv
        pid = process.pid
        assert pid is not None
    # Closing the engine stopped the process (and reaped it).
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_each_run_sees_only_its_own_inputs_and_the_outputs_it_reported(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    async with start_engine(command=fake_command()) as engine:
        process = engine.process
        assert process is not None
        await run_engine(
            engine, make_job(tmp_path, workflow_text("r01_invert"), {"shapes.png": SHAPES})
        )

        await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))

        assert list(process.input_dir.iterdir()) == []
        assert sorted(p.name for p in process.output_dir.rglob("*") if p.is_file()) == [
            "bench_a_00001_.png"
        ]


async def test_a_crash_mid_run_is_retryable_and_the_next_run_restarts_comfyui(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed"
    command = fake_command("--fake-crash-at-node", "2", "--fake-crash-marker", str(marker))
    async with start_engine(command=command) as engine:
        first_url = engine.base_url
        with pytest.raises(ComfyUIUnavailable, match="exited with code 3 during the run") as raised:
            await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))
        assert failure_of(raised.value).retryable
        assert marker.exists()

        run = await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))

        assert run.result is not None
        assert [f.filename for f in run.result.files] == ["bench_a_00001_.png"]
        assert engine.base_url != first_url


async def test_a_comfyui_that_exits_while_starting_fails_with_its_log(
    start_engine: StartEngine,
) -> None:
    command = shlex.join([sys.executable, "-c", "print('no torch here'); raise SystemExit(2)"])

    with pytest.raises(ComfyUIUnavailable, match="exited with code 2 while starting") as raised:
        async with start_engine(command=command):
            pass

    assert "no torch here" in raised.value.message


async def test_a_prompt_that_ignores_the_interrupt_gets_comfyui_restarted(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    command = fake_command("--fake-node-seconds", "0.5", "--fake-ignore-interrupts")
    async with start_engine(command=command, interrupt_timeout_s=0.3) as engine:
        process = engine.process
        assert process is not None
        cancel, run = CancelToken(), Run()
        task = asyncio.create_task(
            run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")), cancel, run)
        )

        async def node_1_runs() -> None:
            assert (NodeState.RUNNING, "1") in [(e.state, e.node_id) for e in run.events]

        await eventually(node_1_runs)
        cancel.cancel()
        with pytest.raises(RunInterrupted):
            await task
        assert not process.started

        # The next run restarts it, and runs.
        fast = await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))
        assert fast.result is not None and process.exit_code() is None


async def test_each_runs_models_are_visible_to_comfyui(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    model = tmp_path / "cache" / ("ab" * 32)
    model.parent.mkdir()
    model.write_bytes(b"weights")
    other = tmp_path / "cache" / ("cd" * 32)
    other.write_bytes(b"other weights")
    async with start_engine(command=fake_command()) as engine:
        models = {"checkpoints/sdxl/base.safetensors": model, "loras/style.safetensors": other}
        job = replace(make_job(tmp_path, workflow_text("a_tiny")), models=models)
        await run_engine(engine, job)
        assert await comfyui_models(engine.base_url, "checkpoints") == ["sdxl/base.safetensors"]
        assert await comfyui_models(engine.base_url, "loras") == ["style.safetensors"]

        # The next run sees its own models only.
        await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))
        assert await comfyui_models(engine.base_url, "checkpoints") == []

    assert model.read_bytes() == b"weights"


async def comfyui_models(url: str, folder: str) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/models/{folder}") as response:
        assert response.status == 200
        return list(await response.json())


def test_linking_models_touches_only_what_changed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    base, style, other = (cache / name for name in ("base", "style", "other"))
    for model in (base, style, other):
        model.write_bytes(model.name.encode())
    process = ComfyUIProcess(["true"], tmp_path / "comfyui", "cpu")
    process.link_models({"checkpoints/sd/base.safetensors": base, "loras/s.safetensors": style})
    checkpoints = process.models_dir / "checkpoints"
    before = (
        os.stat(checkpoints / "sd").st_mtime_ns,
        os.lstat(checkpoints / "sd" / "base.safetensors").st_ino,
    )

    # The same checkpoint again, the lora swapped: the checkpoint's folder is left as it was.
    process.link_models({"checkpoints/sd/base.safetensors": base, "loras/s.safetensors": other})

    after = (
        os.stat(checkpoints / "sd").st_mtime_ns,
        os.lstat(checkpoints / "sd" / "base.safetensors").st_ino,
    )
    assert after == before
    assert (process.models_dir / "loras" / "s.safetensors").read_bytes() == b"other"

    # Nothing: every link and emptied subfolder goes, ComfyUI's folders stay.
    (checkpoints / "stray.safetensors").write_bytes(b"left by someone")
    process.link_models({})

    assert [p for p in process.models_dir.rglob("*") if not p.is_dir()] == []
    assert not (checkpoints / "sd").exists()
    assert sorted(p.name for p in process.models_dir.iterdir()) == sorted(MODEL_FOLDERS)
    assert base.read_bytes() == b"base"
