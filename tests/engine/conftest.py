"""Fixtures for running workflows with the native engine on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.workflow.io import DirectoryInputStore
from services.executor.native import NativeEngine
from tests.engine.devices import native_device
from tests.unit.workflow.refdata import comfyui_ref_dir


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    path = comfyui_ref_dir()
    if not path.is_dir():
        pytest.skip(f"ComfyUI reference material not found at {path}")
    return path


@pytest.fixture(scope="session")
def input_store(ref_dir: Path) -> DirectoryInputStore:
    return DirectoryInputStore(ref_dir / "inputs")


@pytest.fixture
def engine() -> NativeEngine:
    return NativeEngine(native_device())
