"""A byte counter on stderr for uploads: ``sd15.safetensors  [#####.....] 412.0 MiB/2.0 GiB``."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 28


class BytesLine:
    """Redraws in place on a terminal (at most every 0.1 s), else prints each quarter."""

    def __init__(self, label: str, out: TextIO = sys.stderr) -> None:
        self.label = label
        self.out = out
        self.tty = out.isatty()
        self._drawn_at = 0.0
        self._quarter = -1

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        if self.tty:
            now = time.monotonic()
            if now - self._drawn_at < 0.1 and done < total:
                return
            self._drawn_at = now
            self.out.write("\r\x1b[K" + render_bytes(self.label, done, total))
        elif int(share * 4) > self._quarter:
            self._quarter = int(share * 4)
            self.out.write(render_bytes(self.label, done, total) + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self._drawn_at:
            self.out.write("\n")
            self.out.flush()


def render_bytes(label: str, done: int, total: int) -> str:
    filled = round(done / total * _WIDTH) if total else _WIDTH
    bar = "#" * filled + "." * (_WIDTH - filled)
    return f"{label}  [{bar}] {size(done)}/{size(total)}"


def size(n: int) -> str:
    """1536 -> "1.5 KiB", in the largest unit that keeps the number at or above 1."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
