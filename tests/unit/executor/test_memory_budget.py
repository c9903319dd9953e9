"""The executor's memory budget: its settings, how its default is derived, and what a refused
allocation or input image is reported as (a workflow error, never retried)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.rpc import code_pb2

from comfyfleet.common.config import ConfigError
from comfyfleet.common.errors import error_info
from services.executor import resources
from services.executor.attempt import failure_of
from services.executor.config import Config
from services.executor.engine import NodeRaised
from services.executor.resources import available_memory_bytes, run_memory_budget
from services.executor.server import memory_guard

GIB = 1 << 30


@pytest.mark.parametrize(
    ("exception_type", "reason"),
    [
        ("comfyfleet.workflow.budget.BudgetExceeded", "MEMORY_BUDGET_EXCEEDED"),
        ("comfyfleet.workflow.budget.InputImageTooLarge", "INPUT_IMAGE_TOO_LARGE"),
    ],
)
def test_a_refused_allocation_is_a_workflow_error_never_retried(
    exception_type: str, reason: str
) -> None:
    err = failure_of(NodeRaised("3", "ImageScaleBy", exception_type, "a [64, 3, 512, 512] ..."))

    status = err.to_status()
    assert err.retryable is False
    assert status.code == code_pb2.FAILED_PRECONDITION
    info = error_info(status)
    assert info is not None and info.reason == reason
    assert info.metadata["node_id"] == "3"


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_MEMORY_BUDGET_BYTES", str(4 * GIB))
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_MEMORY_BUDGET_FRACTION", "0.5")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_MAX_INPUT_PIXELS", "1000000")

    cfg = Config.from_env()

    assert (cfg.memory_budget_bytes, cfg.memory_budget_fraction) == (4 * GIB, 0.5)
    assert cfg.max_input_pixels == 1_000_000
    assert Config().memory_budget_bytes is None and Config().max_input_pixels == 8192 * 8192


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXECUTOR_MEMORY_BUDGET_BYTES", "0"),
        ("EXECUTOR_MEMORY_BUDGET_BYTES", "lots"),
        ("EXECUTOR_MEMORY_BUDGET_FRACTION", "0"),
        ("EXECUTOR_MEMORY_BUDGET_FRACTION", "1.5"),
        ("EXECUTOR_MAX_INPUT_PIXELS", "0"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"COMFYFLEET_{name}", value)

    with pytest.raises(ConfigError):
        Config.from_env()


def test_the_default_budget_is_a_fraction_of_the_memory_left_beside_the_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resources, "available_memory_bytes", lambda device: 10 * GIB)

    assert run_memory_budget("cpu", None, 0.5, 2 * GIB) == 4 * GIB
    assert run_memory_budget("cpu", None, 0.5, 20 * GIB) == 0
    assert run_memory_budget("cpu", GIB, 0.5, 2 * GIB) == GIB


def test_the_executors_guard_takes_its_settings() -> None:
    cfg = Config(memory_budget_bytes=3 * GIB, max_input_pixels=1000, weights_budget_bytes=0)

    guard = memory_guard(cfg, "cpu")

    assert (guard.budget_bytes, guard.max_input_pixels) == (3 * GIB, 1000)
    assert guard.free_bytes is not None and guard.free_bytes() > 0


def test_on_cpu_a_cgroup_limit_bounds_the_available_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{2 * GIB}\n")
    usage.write_text(f"{GIB + 5}\n")
    monkeypatch.setattr(resources, "_CGROUP_FILES", ((str(limit), str(usage)),))

    assert available_memory_bytes("cpu") == GIB - 5

    limit.write_text("max\n")
    assert available_memory_bytes("cpu") > 0


def test_on_cuda_the_available_memory_counts_what_torch_holds_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cuda = resources.torch.cuda
    monkeypatch.setattr(cuda, "mem_get_info", lambda d: (3 * GIB, 80 * GIB))
    monkeypatch.setattr(cuda, "memory_reserved", lambda d: 5 * GIB)
    monkeypatch.setattr(cuda, "memory_allocated", lambda d: 4 * GIB)

    assert available_memory_bytes("cuda:0") == 4 * GIB
