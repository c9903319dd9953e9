"""The RunPod worker as RunPod runs it: ``python -m services.executor.runpod_worker``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from comfyfleet.executor.v1 import executor_pb2
from tests.support.paths import REPO_ROOT

# Importing torch and the nodes takes a few seconds on a small machine.
START_TIMEOUT_S = 90.0


def worker_env(work_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a CPU worker with ``COMFYFLEET_EXECUTOR_<NAME>`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(
        {
            "COMFYFLEET_EXECUTOR_DEVICE": "cpu",
            "COMFYFLEET_EXECUTOR_WORK_DIR": str(work_dir),
            "COMFYFLEET_EXECUTOR_CANCEL_GRACE_S": "5",
        }
    )
    env.update({f"COMFYFLEET_EXECUTOR_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.asynccontextmanager
async def worker_process(
    env: Mapping[str, str], args: Sequence[str] = (), log_file: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The worker process; its output goes to ``log_file``. Killed when still running after."""
    # A file, not a pipe: a pipe nobody reads would stall a chatty worker.
    out = await asyncio.to_thread(log_file.open, "wb") if log_file else None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.executor.runpod_worker",
        *args,
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=out or asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        if out:
            out.close()


def updates_of(chunks: Sequence[Any]) -> list[executor_pb2.ExecuteUpdate]:
    """Stream chunks parsed back the way the scheduler reads them."""
    return [json_format.ParseDict(chunk, executor_pb2.ExecuteUpdate()) for chunk in chunks]


def job_input(request: executor_pb2.ExecuteRequest) -> dict[str, Any]:
    return {"execute_request": json_format.MessageToDict(request)}
