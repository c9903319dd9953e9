"""Errors the devstack raises; each message says what to do about it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

INSTALL_SCRIPT = "scripts/install-system-deps.sh"


class DevStackError(RuntimeError):
    """Something in the local infrastructure could not be started or stopped."""


class StartupError(DevStackError):
    """A server did not become ready; the message carries its log tail."""


class MissingBinaryError(DevStackError):
    """A program the devstack needs is not installed."""

    def __init__(self, program: str, apt_package: str, searched: Iterable[str] = ()) -> None:
        where = ", ".join(searched)
        super().__init__(
            f"{program} not found{f' (looked in {where})' if where else ''}: install it with "
            f"`apt-get install {apt_package}` or run {INSTALL_SCRIPT}"
        )
        self.program = program
        self.apt_package = apt_package


def find_program(
    program: str, apt_package: str, *, env_var: str, extra_dirs: Iterable[Path] = ()
) -> Path:
    """Finds an executable: $env_var first, then PATH, then the given directories."""
    override = os.environ.get(env_var)
    if override:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise DevStackError(f"${env_var}={override} is not an executable file")
    found = shutil.which(program)
    if found:
        return Path(found)
    dirs = list(extra_dirs)
    for directory in dirs:
        candidate = directory / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise MissingBinaryError(program, apt_package, ["$PATH", *map(str, dirs)])
