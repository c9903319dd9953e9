"""Device, peak memory and utilisation: the CPU fallback, and the CUDA paths with torch.cuda's
counters standing in for a GPU (this machine has none)."""

from __future__ import annotations

import pytest
import torch

from services.executor import resources
from services.executor.resources import UsageMeter, device_info, resolve_device

MIB = 1 << 20


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call into torch.cuda fails the test: a CPU executor must not touch CUDA."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CPU executor called into torch.cuda")

    for name in (
        "reset_peak_memory_stats",
        "max_memory_allocated",
        "mem_get_info",
        "utilization",
        "get_device_name",
    ):
        monkeypatch.setattr(resources.torch.cuda, name, refuse)


@pytest.mark.usefixtures("no_cuda")
async def test_on_cpu_peak_memory_is_the_rise_of_the_resident_set() -> None:
    async with UsageMeter("cpu") as meter:
        held = torch.ones(64 * MIB // 4)  # 64 MiB, written so the pages are resident

    usage = meter.usage()
    assert usage.memory_used_bytes >= 48 * MIB
    assert usage.gpu_utilization == 0.0
    del held


@pytest.mark.usefixtures("no_cuda")
async def test_on_cpu_a_run_that_frees_what_it_took_reports_no_negative_memory() -> None:
    async with UsageMeter("cpu", in_process=False) as meter:
        pass

    usage = meter.usage()
    assert usage.memory_used_bytes >= 0 and usage.gpu_utilization == 0.0


@pytest.mark.usefixtures("no_cuda")
def test_a_cpu_device_reports_the_machines_memory() -> None:
    info = device_info("cpu")

    assert info.name == "cpu"
    assert 0 < info.free_memory_bytes <= info.total_memory_bytes


def test_auto_picks_the_cpu_without_cuda_and_cuda_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resources.torch.cuda, "is_available", lambda: False)

    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


async def test_on_cuda_the_native_engine_reports_the_allocator_peak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    cuda = resources.torch.cuda
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda d: calls.append(f"reset {d}"))
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda d: 3 * MIB)
    monkeypatch.setattr(cuda, "utilization", lambda d: 40)

    async with UsageMeter("cuda:0") as meter:
        pass

    usage = meter.usage()
    assert calls == ["reset cuda:0"]
    assert (usage.memory_used_bytes, usage.gpu_utilization) == (3 * MIB, 40.0)


async def test_on_cuda_without_nvml_utilisation_falls_back_to_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_nvml(device: torch.device) -> int:
        raise ModuleNotFoundError("pynvml")

    cuda = resources.torch.cuda
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda d: None)
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda d: 0)
    monkeypatch.setattr(cuda, "utilization", no_nvml)

    async with UsageMeter("cuda:0") as meter:
        pass

    assert (meter.usage().memory_used_bytes, meter.usage().gpu_utilization) == (0, 0.0)


async def test_on_cuda_an_engine_in_another_process_is_measured_on_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = 80 * 1024 * MIB
    free = [total - 10 * MIB]  # what the driver says is free, as the run goes on
    cuda = resources.torch.cuda
    monkeypatch.setattr(cuda, "mem_get_info", lambda d: (free[0], total))
    monkeypatch.setattr(cuda, "utilization", lambda d: 0)

    def refuse(d: object) -> None:
        raise AssertionError("torch's allocator does not see another process's memory")

    monkeypatch.setattr(cuda, "reset_peak_memory_stats", refuse)
    monkeypatch.setattr(cuda, "max_memory_allocated", refuse)

    async with UsageMeter("cuda:0", in_process=False) as meter:
        free[0] -= 500 * MIB  # ComfyUI allocates while the run lasts
        meter.sample()
        free[0] += 500 * MIB  # and frees it before the end

    assert meter.usage().memory_used_bytes == 500 * MIB
