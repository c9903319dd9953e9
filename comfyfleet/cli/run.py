"""``comfyfleet run WORKFLOW.json --out DIR``: run a workflow on this machine, no platform.

The native engine runs in-process; the workflow is checked as the platform checks a
submission (every node's problems, printed one per line), progress is drawn per node as
``comfyfleet submit --wait`` draws it, and the output files land in ``--out`` (a file of the
same name is replaced). Exit status: 0 done, 1 the workflow failed while running, 2 the
command line or the workflow is invalid.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from comfyfleet.cli.progress import ProgressLine, render
from comfyfleet.common.errors import ComfyfleetError, InvalidArgument
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk.errors import describe
from comfyfleet.workflow.io import UnsafePathError, safe_relative
from comfyfleet.workflow.runner import CancelToken

if TYPE_CHECKING:
    from services.executor.engine import NodeEvent

DEVICES = ("auto", "cpu", "cuda")
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def add_parser(sub: Any) -> None:
    """Adds ``run`` to the ``comfyfleet`` subcommands (it needs no client: ``local``)."""
    run = sub.add_parser(
        "run", help="run a workflow here with the native engine (no platform needed)"
    )
    run.add_argument("workflow", help="the workflow in ComfyUI's API format")
    run.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    run.add_argument("--out", required=True, help="write the output files into this folder")
    run.add_argument("--device", choices=DEVICES, default="auto", help="default: auto")
    run.set_defaults(local=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here: main imports this module, and the engine pulls in torch.
    from comfyfleet.cli.main import UsageError, load_workflow, parse_inputs

    try:
        workflow = load_workflow(args.workflow)
        inputs = parse_inputs(args.input)
        _check_names(inputs)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    return run_workflow(workflow, inputs, Path(args.out), args.device)


def _check_names(inputs: Mapping[str, Path]) -> None:
    from comfyfleet.cli.main import UsageError

    for name in inputs:
        try:
            safe_relative(name)
        except UnsafePathError as err:
            raise UsageError(f"--input {name}: {err}") from None


def run_workflow(
    workflow: str, inputs: Mapping[str, Path], out: Path, device: str, err: TextIO | None = None
) -> int:
    """Runs ``workflow`` with ``inputs`` (by the names its loaders use) into ``out``.

    Progress and errors go to ``err`` (default: stderr), the written files' paths to stdout.
    """
    err = err or sys.stderr
    from services.executor.attempt import failure_of
    from services.executor.engine import EngineError, EngineJob, WorkflowRejected, build_engine
    from services.executor.native.registry import native_registry
    from services.executor.resources import resolve_device
    from services.gateway.validation import check_workflow

    try:
        torch_device = resolve_device(device)
    except RuntimeError:
        print(f"error: --device {device}: torch sees no CUDA device", file=err)
        return EXIT_INVALID
    try:
        check_workflow(workflow, native_registry().catalog)
    except ComfyfleetError as error:
        print(f"error: {describe(error.to_status())}", file=err)
        return EXIT_INVALID
    with tempfile.TemporaryDirectory(prefix="comfyfleet-run-") as work:
        input_dir = _stage(inputs, Path(work) / "inputs")
        engine = build_engine("native", torch_device, Path(work))
        progress = NodeProgress(err)
        started = time.perf_counter()
        try:
            result = engine.run(EngineJob(workflow, input_dir), progress, CancelToken())
        except WorkflowRejected as error:
            # Only what needs the input files is left to find here (a missing image).
            progress.close()
            refused = InvalidArgument("the workflow is not valid", error.violations)
            print(f"error: {describe(refused.to_status())}", file=err)
            return EXIT_INVALID
        except EngineError as error:
            progress.close()
            print(f"error: {describe(failure_of(error).to_status())}", file=err)
            return EXIT_FAILED
        progress.close()
        seconds = time.perf_counter() - started
        print(f"done in {seconds:.2f}s on {torch_device}", file=err)
        for file in result.files:
            print(_write(out, file.subfolder, file.filename, file.data))
    return EXIT_OK


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
        from services.executor.engine import NodeState

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
    progress = executions_pb2.NodeProgress(
        node_id=event.node_id,
        class_type=event.class_type,
        value=event.value,
        max=event.max,
        nodes_done=event.nodes_done,
        nodes_total=event.nodes_total,
    )
    return executions_pb2.WorkflowExecutionEvent(
        event_type="execution.progress",
        status=executions_pb2.EXECUTION_STATE_RUNNING,
        progress=progress,
    )
