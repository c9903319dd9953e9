"""An executor's life on serverless capacity: warm up before taking work, know when to leave.

A serverless executor is paid for while it lives, so it leaves on its own: after a number of
jobs (a fresh process per batch of work keeps leaks and fragmentation bounded), or once it has
been idle for a while (the autoscaler then counts it gone). Both limits are off by default.
No grpc and no runpod imports here: the gRPC executor and the RunPod worker share this.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from comfyfleet.workflow.runner import CancelToken
from services.executor.attempt import failure_of
from services.executor.engine import Engine, EngineError, EngineJob


class WarmupFailed(Exception):
    """The warmup workflow could not be read or did not run to the end."""


def warmup_workflow_text(spec: str) -> str:
    """The warmup workflow named by ``spec``: inline JSON (an object) or a file's path."""
    if spec.lstrip().startswith("{"):
        return spec
    path = Path(spec)
    try:
        return path.read_text()
    except OSError as err:
        raise WarmupFailed(f"cannot read the warmup workflow {spec}: {err.strerror}") from None


def warm_up(engine: Engine, spec: str, inputs_dir: Path | None, work_dir: Path) -> float:
    """Runs the warmup workflow once, blocking; returns its seconds or raises WarmupFailed.

    The run also fills the engine's node cache (in the shared scope, as no tenant asked for
    it): a first job that repeats the warmup workflow reuses its loaded models, and on the
    native engine every node's result but the output nodes' (which save the job's own files).
    """
    workflow = warmup_workflow_text(spec)
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="warmup-", dir=work_dir) as empty:
        job = EngineJob(workflow, inputs_dir or Path(empty))
        started = time.perf_counter()
        try:
            engine.run(job, lambda event: None, CancelToken())
        except EngineError as err:
            raise WarmupFailed(f"the warmup workflow failed: {failure_of(err).message}") from err
        return time.perf_counter() - started


class ServerlessWatch:
    """Counts attempts and idle time, and says when a serverless executor should leave.

    ``observe`` is told whenever the slot changes; past ``max_jobs`` started attempts the
    executor must take no more (``accepting``), and it leaves once the last one ended.
    ``idle_exit_s`` without an attempt also ends it. Zero turns a limit off.
    """

    def __init__(
        self, idle_exit_s: float, max_jobs: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_exit_s = idle_exit_s
        self.max_jobs = max_jobs
        self.jobs = 0
        self._clock = clock
        self._busy = False
        self._idle_since = clock()
        self._changed = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return bool(self.idle_exit_s or self.max_jobs)

    @property
    def accepting(self) -> bool:
        return not self.max_jobs or self.jobs < self.max_jobs

    def observe(self, busy: bool) -> None:
        if busy and not self._busy:
            self.jobs += 1
        elif self._busy and not busy:
            self._idle_since = self._clock()
        self._busy = busy
        self._changed.set()

    def reason_to_exit(self) -> str | None:
        """Why the executor should leave now, or None while it should stay."""
        if self._busy:
            return None
        if not self.accepting:
            return f"ran its {self.max_jobs} jobs"
        if self.idle_exit_s and self.idle_for() >= self.idle_exit_s:
            return f"idle for {self.idle_exit_s:g}s"
        return None

    def idle_for(self) -> float:
        return 0.0 if self._busy else self._clock() - self._idle_since

    async def finished(self) -> str:
        """Returns (with the reason) once the executor should leave; never when disabled."""
        while (reason := self.reason_to_exit()) is None:
            self._changed.clear()
            wait = None
            if self.idle_exit_s and not self._busy:
                wait = max(self.idle_exit_s - self.idle_for(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
        return reason


class IdlePolls:
    """Counts job polls in a row that found the worker idle; ``limit`` 0 never trips."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def poll(self, idle: bool) -> bool:
        """Records one poll; True once ``limit`` idle polls came in a row."""
        self.count = self.count + 1 if idle else 0
        return bool(self.limit) and self.count >= self.limit
