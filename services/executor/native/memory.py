"""The native engine's memory guard: allocations checked before they are made.

A tensor whose size comes through links (a loaded image scaled up, a batch repeated) cannot be
judged before the run. Were it allocated anyway, torch would raise at best; on CPU, with the
kernel overcommitting, the process is more likely OOM-killed when the pages are touched, and
the execution goes round the retry loop killing one executor per attempt. So every native node
path that makes a tensor larger than its inputs asks :func:`check_allocation` first, which
raises :class:`~comfyfleet.workflow.budget.BudgetExceeded` (a workflow error, never retried)
when the tensor exceeds the run's memory budget or the memory free on the device right now.

The guard of the running workflow is found through a context variable that
:meth:`NativeEngine.run` sets on its thread, so deep helpers (resizing, batching) need no
extra argument; outside a run nothing is checked.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from comfyfleet.workflow.budget import (
    RESOURCE_BUDGET,
    BudgetExceeded,
    ImageHeader,
    InputImageTooLarge,
    decoded_size_problem,
    format_bytes,
)


@dataclass(frozen=True)
class MemoryGuard:
    """The bounds of one native run.

    ``budget_bytes`` bounds any one allocation (None: no fixed bound); ``free_bytes`` says how
    much memory the device has free now (None: not checked). ``max_input_pixels`` bounds an
    input image's decoded size per frame.
    """

    budget_bytes: int | None = None
    free_bytes: Callable[[], int] | None = None
    max_input_pixels: int = RESOURCE_BUDGET.max_input_pixels

    def check(
        self, shape: Sequence[int], dtype: torch.dtype = torch.float32, copies: int = 1
    ) -> None:
        """Raises :class:`BudgetExceeded` when ``copies`` tensors of ``shape`` would not fit
        at once (a computation that holds several intermediates of its output's size)."""
        size = math.prod(int(d) for d in shape) * dtype.itemsize * copies
        if self.budget_bytes is not None and size > self.budget_bytes:
            raise BudgetExceeded(
                f"{_describe(shape, size, copies)} would exceed this executor's memory budget of"
                f" {format_bytes(self.budget_bytes)} for one allocation"
            )
        if self.free_bytes is not None:
            free = self.free_bytes()
            if size > free:
                raise BudgetExceeded(
                    f"{_describe(shape, size, copies)} would exceed the {format_bytes(free)} of memory"
                    " free on the executor's device"
                )

    def check_image(self, name: str, header: ImageHeader) -> None:
        """Raises :class:`InputImageTooLarge` naming input ``name`` when its header says it
        decodes to more pixels than allowed."""
        problem = decoded_size_problem(header, self.max_input_pixels)
        if problem is not None:
            raise InputImageTooLarge(f"the input image {name!r} {problem}")


UNGUARDED = MemoryGuard()
_ACTIVE: contextvars.ContextVar[MemoryGuard] = contextvars.ContextVar(
    "native_memory_guard", default=UNGUARDED
)


@contextlib.contextmanager
def guarding(guard: MemoryGuard) -> Iterator[None]:
    """Makes ``guard`` the one :func:`check_allocation` uses on this thread until the end."""
    token = _ACTIVE.set(guard)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_guard() -> MemoryGuard:
    return _ACTIVE.get()


def check_allocation(
    shape: Sequence[int], dtype: torch.dtype = torch.float32, copies: int = 1
) -> None:
    """Raises :class:`BudgetExceeded` when the running workflow may not make a tensor of
    ``shape`` (``copies`` of them at once); call it before making one larger than the node's
    inputs."""
    _ACTIVE.get().check(shape, dtype, copies)


def _describe(shape: Sequence[int], size: int, copies: int) -> str:
    tensors = "tensor" if copies == 1 else f"tensor ({copies} at once while it is computed)"
    return f"a {[int(d) for d in shape]} {tensors} ({format_bytes(size)})"
