"""A started ComfyUI keeps its state in the engine's work dir, never in its source tree, so an
image can ship ComfyUI on a read-only root filesystem (ECS's readonlyRootFilesystem)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from services.executor.comfyui import ComfyUIEngine
from tests.integration.executor.comfyui.conftest import (
    REAL_RUN_TIMEOUT_S,
    make_job,
    real_settings,
    run_engine,
    workflow_text,
)
from tests.support.real_comfyui import RealComfyUI


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


async def test_a_run_writes_nothing_into_comfyuis_source_tree(
    real_comfyui: RealComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "ComfyUI"
    shutil.copytree(real_comfyui.source_dir, source, symlinks=True)
    # ComfyUI makes an input/ folder beside its sources when there is none (on import, before
    # it reads its flags): images ship one, empty.
    for scratch in ("user", "temp", "output"):
        shutil.rmtree(source / scratch, ignore_errors=True)
    # As the image runs it: no bytecode next to the sources.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    before = _tree(source)
    settings = real_settings(real_comfyui, command=real_comfyui.command(source_dir=source))
    engine = ComfyUIEngine(settings, "cpu", tmp_path / "work")
    try:
        await asyncio.to_thread(engine.start)
        run = await run_engine(
            engine, make_job(tmp_path, workflow_text("a_tiny")), timeout=REAL_RUN_TIMEOUT_S
        )
    finally:
        await asyncio.to_thread(engine.close)
    assert run.result is not None and run.result.files
    assert _tree(source) - before == set()
    assert (tmp_path / "work" / "user" / "comfyui.db").exists()
