"""A one-line progress bar on stderr, drawn from execution events."""

from __future__ import annotations

import sys
from typing import TextIO

from comfyfleet.executions.v1 import executions_pb2

_WIDTH = 28


def state_name(state: int) -> str:
    return executions_pb2.ExecutionState.Name(state).removeprefix("EXECUTION_STATE_").lower()


def render(event: executions_pb2.WorkflowExecutionEvent) -> str:
    """``running  [#######.....] 3/5 nodes  ImageBlur 12/20``."""
    p = event.progress
    label = f"{state_name(event.status):<10}"
    if p.nodes_total:
        done = p.nodes_done / p.nodes_total
        filled = round(done * _WIDTH)
        bar = "#" * filled + "." * (_WIDTH - filled)
        step = f" {p.value}/{p.max}" if p.max > 1 else ""
        return f"{label} [{bar}] {p.nodes_done}/{p.nodes_total} nodes  {p.class_type}{step}"
    return label


class ProgressLine:
    """Redraws one line in place when stderr is a terminal, else prints state changes."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""

    def update(self, event: executions_pb2.WorkflowExecutionEvent) -> None:
        line = render(event)
        if line == self.last:
            return
        if self.tty:
            self.out.write("\r\x1b[K" + line)
        elif event.event_type != "execution.progress" or not self.last:
            self.out.write(line + "\n")
        self.out.flush()
        self.last = line

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()
