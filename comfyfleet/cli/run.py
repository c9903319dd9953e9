"""``comfyfleet run WORKFLOW.json --out DIR``: run a workflow on this machine, no platform.

The command line is read here; the run is the executor's (``services.executor.local``),
found through the ``comfyfleet.local_runners`` entry point, so the CLI imports no service
and an install without the executor's dependencies (torch) says what to install. Exit
status: 0 done, 1 the workflow failed while running, 2 the command line or the workflow is
invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from comfyfleet.cli.usage import UsageError
from comfyfleet.workflow.io import UnsafePathError, safe_relative

DEVICES = ("auto", "cpu", "cuda")
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
RUNNERS = "comfyfleet.local_runners"
# run_workflow(workflow, inputs, out, device) -> exit status
Runner = Callable[[str, Mapping[str, Path], Path, str], int]


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
    # Imported here: main imports this module.
    from comfyfleet.cli.main import load_workflow, parse_inputs

    try:
        workflow = load_workflow(args.workflow)
        inputs = parse_inputs(args.input)
        _check_names(inputs)
        run_workflow = local_runner()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    return run_workflow(workflow, inputs, Path(args.out), args.device)


def _check_names(inputs: Mapping[str, Path]) -> None:
    for name in inputs:
        try:
            safe_relative(name)
        except UnsafePathError as err:
            raise UsageError(f"--input {name}: {err}") from None


def local_runner() -> Runner:
    """The native engine's runner; loading it imports torch."""
    found = entry_points(group=RUNNERS, name="native")
    try:
        runner: Runner = next(iter(found)).load()
    except (StopIteration, ModuleNotFoundError) as err:
        missing = f" ({err})" if isinstance(err, ModuleNotFoundError) else ""
        raise UsageError(
            f"comfyfleet run needs the executor{missing}: pip install 'comfyfleet[executor]'"
        ) from None
    return runner
