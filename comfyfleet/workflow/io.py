"""Where nodes read input files and write output files.

Nodes never touch the file system directly: loaders read through an :class:`InputStore` and
savers hand each file to an :class:`OutputSink`. The executor service plugs presigned-URL
backed implementations behind these protocols; the directory and memory implementations here
serve local runs and tests.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


class UnsafePathError(ValueError):
    """A file name or prefix that would leave its folder."""


@runtime_checkable
class InputStore(Protocol):
    """Read-only access to the input files a workflow names (ComfyUI's input folder)."""

    def names(self) -> Sequence[str]:
        """Every file name the store holds (``LoadImage``'s choices)."""
        ...

    def exists(self, name: str) -> bool: ...

    def read(self, name: str) -> bytes:
        """The file's bytes; raises ``FileNotFoundError`` when absent."""
        ...

    def fingerprint(self, name: str) -> str:
        """A content hash (sha256 hex, as ComfyUI's ``IS_CHANGED`` of the loaders)."""
        ...


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One file a node produced. ``type`` is ``output`` or ``temp`` (previews)."""

    node_id: str
    filename: str
    subfolder: str
    type: str
    data: bytes
    content_type: str

    @property
    def path(self) -> str:
        """``subfolder/filename`` (or just the file name)."""
        return posixpath.join(self.subfolder, self.filename) if self.subfolder else self.filename

    def ref(self) -> dict[str, str]:
        """The ``{"filename", "subfolder", "type"}`` object ComfyUI reports."""
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


@runtime_checkable
class OutputSink(Protocol):
    """Receives the files nodes produce."""

    def next_counter(self, type: str, subfolder: str, prefix: str) -> int:
        """The first free counter for ``{prefix}_{counter:05}_.*`` files (1 when none)."""
        ...

    def write(self, file: OutputFile) -> None: ...


def safe_relative(name: str) -> str:
    """Normalise a relative ``a/b.png`` name; raise :class:`UnsafePathError` if it escapes."""
    if not name or "\x00" in name:
        raise UnsafePathError(f"invalid file name {name!r}")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePathError(f"file name {name!r} leaves its folder")
    return norm


def split_prefix(filename_prefix: str) -> tuple[str, str]:
    """Split ``latents/r08`` into ``("latents", "r08")`` as ComfyUI's savers do.

    Raises :class:`UnsafePathError` for a prefix that would write outside the output folder.
    """
    norm = posixpath.normpath(filename_prefix.replace("\\", "/")) if filename_prefix else ""
    if norm.startswith("/") or norm == ".." or norm.startswith("../"):
        raise UnsafePathError("Saving image outside the output folder is not allowed.")
    subfolder, name = posixpath.split(norm)
    if name in ("", "."):
        name = ""
    return subfolder, name


def counter_after(prefix: str, names: Iterable[str]) -> int:
    """One past the highest counter of ``{prefix}_{NNNNN}_`` among ``names`` (1 when none)."""
    pattern = re.compile(re.escape(prefix) + r"_(\d+)_")
    best = 0
    for name in names:
        match = pattern.match(name)
        if match:
            best = max(best, int(match.group(1)))
    return best + 1


class DirectoryInputStore:
    """An :class:`InputStore` over a folder (names may use ``/`` for subfolders)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._hashes: dict[str, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / safe_relative(name)

    def names(self) -> Sequence[str]:
        if not self.root.is_dir():
            return []
        found = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(found)

    def exists(self, name: str) -> bool:
        try:
            return self._path(name).is_file()
        except UnsafePathError:
            return False

    def read(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def fingerprint(self, name: str) -> str:
        path = self._path(name)
        stat = path.stat()
        with self._lock:
            known = self._hashes.get(name)
        if known is not None and known[:2] == (stat.st_mtime_ns, stat.st_size):
            return known[2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with self._lock:
            self._hashes[name] = (stat.st_mtime_ns, stat.st_size, digest)
        return digest


class MemoryInputStore:
    """An :class:`InputStore` over a mapping of names to bytes."""

    def __init__(self, files: Mapping[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})

    def names(self) -> Sequence[str]:
        return sorted(self.files)

    def exists(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str) -> bytes:
        try:
            return self.files[name]
        except KeyError:
            raise FileNotFoundError(name) from None

    def fingerprint(self, name: str) -> str:
        return hashlib.sha256(self.read(name)).hexdigest()


class DirectoryOutputSink:
    """An :class:`OutputSink` writing ``output`` files under one folder and ``temp`` ones
    under another (ComfyUI's ``output/`` and ``temp/``)."""

    def __init__(
        self, output_dir: str | os.PathLike[str], temp_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.temp_dir = Path(temp_dir) if temp_dir is not None else self.output_dir / "_temp"
        self.written: list[OutputFile] = []

    def _folder(self, type: str, subfolder: str) -> Path:
        base = self.temp_dir if type == "temp" else self.output_dir
        return base / safe_relative(subfolder) if subfolder else base

    def next_counter(self, type: str, subfolder: str, prefix: str) -> int:
        folder = self._folder(type, subfolder)
        if not folder.is_dir():
            return 1
        return counter_after(prefix, os.listdir(folder))

    def write(self, file: OutputFile) -> None:
        folder = self._folder(file.type, file.subfolder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / safe_relative(file.filename)).write_bytes(file.data)
        self.written.append(file)


class MemoryOutputSink:
    """An :class:`OutputSink` that keeps every file in memory (tests, small jobs)."""

    def __init__(self) -> None:
        self.files: list[OutputFile] = []

    def next_counter(self, type: str, subfolder: str, prefix: str) -> int:
        names = (f.filename for f in self.files if f.type == type and f.subfolder == subfolder)
        return counter_after(prefix, names)

    def write(self, file: OutputFile) -> None:
        self.files.append(file)

    def by_path(self) -> dict[str, OutputFile]:
        return {f.path: f for f in self.files}
