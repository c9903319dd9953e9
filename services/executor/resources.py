"""The machine the executor runs on: its device, memory and utilisation during a run.

Peak memory means peak *device* memory: on CUDA, torch's allocator peak for the run when the
engine runs in this process (native), or how far the device's used memory rose when another
process runs the workflow (a ComfyUI); on CPU, how far the process's resident set rose above
where it stood when the run began. Rises are sampled, so a spike shorter than the sampling
interval can be missed. Nothing here touches CUDA on a CPU executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.05


def resolve_device(setting: str) -> str:
    """The torch device for "auto", "cpu" or "cuda": CUDA when asked for or available."""
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("COMFYFLEET_EXECUTOR_DEVICE=cuda but torch sees no CUDA device")
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    total_memory_bytes: int
    free_memory_bytes: int


def device_info(device: str) -> DeviceInfo:
    """Name and memory of the device; "cpu" with the machine's RAM when there is no GPU."""
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info(torch.device(device))
        return DeviceInfo(torch.cuda.get_device_name(torch.device(device)), total, free)
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    return DeviceInfo("cpu", total, free)


def weights_budget(device: str, budget_bytes: int | None, fraction: float) -> int:
    """The loaded-weights budget: as configured, or ``fraction`` of the device's free memory."""
    if budget_bytes is not None:
        return budget_bytes
    return int(device_info(device).free_memory_bytes * fraction)


def available_memory_bytes(device: str) -> int:
    """Memory a new allocation can take on the device now.

    CUDA: what the driver has free plus what torch's allocator holds unused. CPU: the
    kernel's ``MemAvailable``, and no more than the container's cgroup has left: past its
    limit the OOM killer ends the process however much the machine has free.
    """
    if device.startswith("cuda"):
        dev = torch.device(device)
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    available = _meminfo_available()
    left = _cgroup_left()
    return min(available, left) if left is not None else available


def run_memory_budget(
    device: str, budget_bytes: int | None, fraction: float, weights_bytes: int
) -> int:
    """The bound on one allocation of a native run: as configured, or ``fraction`` of the
    memory available now less what loaded weights may come to hold."""
    if budget_bytes is not None:
        return budget_bytes
    return max(0, int((available_memory_bytes(device) - weights_bytes) * fraction))


def _meminfo_available() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# (limit, usage) files of cgroup v2, then v1.
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def _cgroup_left() -> int | None:
    """What the process's memory cgroup allows beyond its usage; None without a limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            with open(limit_file) as limit, open(usage_file) as usage:
                limit_text, usage_text = limit.read().strip(), usage.read().strip()
        except OSError:
            continue
        # v1 writes "no limit" as a number near 2^63.
        if limit_text == "max" or int(limit_text) >= 2**60:
            return None
        return max(0, int(limit_text) - int(usage_text))
    return None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _gpu_utilization(device: str) -> float | None:
    """NVML's utilisation percent, or None where it cannot be read (no GPU, no pynvml)."""
    if not device.startswith("cuda"):
        return None
    try:
        return float(torch.cuda.utilization(torch.device(device)))
    except Exception:
        return None


@dataclass(frozen=True)
class RunUsage:
    memory_used_bytes: int
    # Mean over the run's samples; 0 when it could not be measured.
    gpu_utilization: float


def _device_used_bytes(device: str) -> int:
    """Memory in use on a CUDA device by every process, as the driver counts it."""
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return int(total - free)


class UsageMeter:
    """Measures one run: ``async with UsageMeter(device) as meter: ...; meter.usage()``.

    ``in_process`` is False for an engine whose workflows run in another process (comfyui):
    torch's allocator here would not see their memory, the device's counters do.
    """

    def __init__(self, device: str, *, in_process: bool = True) -> None:
        self.device = device
        self._on_cuda = device.startswith("cuda")
        self._allocator = self._on_cuda and in_process
        self._device_wide = self._on_cuda and not in_process
        self._baseline = 0
        self._peak = 0
        self._utilization: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> UsageMeter:
        if self._allocator:
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        self._baseline = self._peak = self._used()
        self._task = asyncio.create_task(self._sampling())
        return self

    def _used(self) -> int:
        return _device_used_bytes(self.device) if self._device_wide else _rss_bytes()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    async def _sampling(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        """Takes one sample now (the meter also samples on its own while the run lasts)."""
        if not self._allocator:
            self._peak = max(self._peak, self._used())
        utilization = _gpu_utilization(self.device)
        if utilization is not None:
            self._utilization.append(utilization)

    def usage(self) -> RunUsage:
        if self._allocator:
            memory = int(torch.cuda.max_memory_allocated(torch.device(self.device)))
        else:
            memory = max(self._peak - self._baseline, 0)
        samples = self._utilization
        return RunUsage(memory, sum(samples) / len(samples) if samples else 0.0)
