"""The executor's side of ``comfyfleet run``: a workflow run on this machine, no platform.

The CLI (``comfyfleet.cli.run``) reads the command line and calls ``run_workflow``, which it
finds through the ``comfyfleet.local_runners`` entry point: the CLI imports no service, and
an install without the executor's dependencies (torch) says so instead of failing.

The native engine runs in-process; the workflow is checked as the platform checks a
submission (every node's problems, printed one per line), progress is drawn per node as
``comfyfleet submit --wait`` draws it, and the output files land in ``out`` (a file of the
same name is replaced).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from comfyfleet.cli.progress import ProgressLine, render
from comfyfleet.cli.run import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from comfyfleet.common.errors import ComfyfleetError, InvalidArgument
from comfyfleet.common.workflowcheck import check_workflow
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk.errors import describe
from comfyfleet.workflow.io import safe_relative
from comfyfleet.workflow.runner import CancelToken
from services.executor.attempt import failure_of
from services.executor.convert import node_progress
from services.executor.engine import (
    EngineError,
    EngineJob,
    NodeEvent,
    NodeState,
    ProducedFile,
    WorkflowRejected,
    build_engine,
)
from services.executor.native.registry import native_registry
from services.executor.resources import resolve_device


def run_workflow(
    workflow: str, inputs: Mapping[str, Path], out: Path, device: str, err: TextIO | None = None
) -> int:
    """Runs ``workflow`` with ``inputs`` (by the names its loaders use) into ``out``.

    Progress and errors go to ``err`` (default: stderr), the written files' paths to stdout.
    """
    err = err or sys.stderr
    try:
        torch_device = _checked(workflow, device)
        with tempfile.TemporaryDirectory(prefix="comfyfleet-run-") as work:
            files = _run(workflow, inputs, torch_device, Path(work), err)
            for file in files:
                print(_write(out, file.subfolder, file.filename, file.data))
    except _Stop as stop:
        print(f"error: {stop}", file=err)
        return stop.code
    return EXIT_OK


class _Stop(Exception):
    """The run ends here with this message and exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _checked(workflow: str, device: str) -> str:
    """The torch device, once the workflow passed the platform's submission check."""
    try:
        torch_device = resolve_device(device)
    except RuntimeError:
        raise _Stop(f"--device {device}: torch sees no CUDA device", EXIT_INVALID) from None
    try:
        check_workflow(workflow, native_registry().catalog)
    except ComfyfleetError as error:
        raise _Stop(describe(error.to_status()), EXIT_INVALID) from None
    return torch_device


def _run(
    workflow: str, inputs: Mapping[str, Path], device: str, work: Path, err: TextIO
) -> Sequence[ProducedFile]:
    engine = build_engine("native", device, work)
    job = EngineJob(workflow, _stage(inputs, work / "inputs"))
    progress = NodeProgress(err)
    started = time.perf_counter()
    try:
        result = engine.run(job, progress, CancelToken())
    except WorkflowRejected as error:
        # Only what needs the input files is left to find here (a missing image).
        refused = InvalidArgument("the workflow is not valid", error.violations)
        raise _Stop(describe(refused.to_status()), EXIT_INVALID) from None
    except EngineError as error:
        raise _Stop(describe(failure_of(error).to_status()), EXIT_FAILED) from None
    finally:
        progress.close()
    print(f"done in {time.perf_counter() - started:.2f}s on {device}", file=err)
    return result.files


def _stage(inputs: Mapping[str, Path], folder: Path) -> Path:
    for name, path in inputs.items():
        target = folder / safe_relative(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(out: Path, subfolder: str, filename: str, data: bytes) -> Path:
    folder = out / safe_relative(subfolder) if subfolder else out
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_relative(filename)
    path.write_bytes(data)
    return path


class NodeProgress:
    """Draws engine node events with the CLI's progress line.

    On a terminal the line is redrawn in place; otherwise each finished node gets a line.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.line = ProgressLine(out)

    def __call__(self, event: NodeEvent) -> None:
        shown = _execution_event(event)
        if self.line.tty:
            self.line.update(shown)
        elif event.state in (NodeState.DONE, NodeState.CACHED):
            took = "cached" if event.state == NodeState.CACHED else f"{event.seconds:.3f}s"
            self.out.write(f"{render(shown)}  (node {event.node_id}, {took})\n")
            self.out.flush()

    def close(self) -> None:
        self.line.close()


def _execution_event(event: NodeEvent) -> executions_pb2.WorkflowExecutionEvent:
    """A node event as the progress event the platform would stream for it."""
    return executions_pb2.WorkflowExecutionEvent(
        event_type="execution.progress",
        status=executions_pb2.EXECUTION_STATE_RUNNING,
        progress=node_progress(event),
    )
