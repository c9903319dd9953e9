"""The directory and memory input stores / output sinks, and prefix handling."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfyfleet.workflow.io import (
    DirectoryInputStore,
    DirectoryOutputSink,
    InputStore,
    MemoryInputStore,
    MemoryOutputSink,
    OutputFile,
    OutputSink,
    UnsafePathError,
    counter_after,
    split_prefix,
)


def test_directory_input_store(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(b"abc")
    (tmp_path / "sub" / "b.png").write_bytes(b"xyz")
    store = DirectoryInputStore(tmp_path)
    assert isinstance(store, InputStore)
    assert store.names() == ["a.png", "sub/b.png"]
    assert store.exists("sub/b.png") and not store.exists("missing.png")
    assert store.read("a.png") == b"abc"
    assert store.fingerprint("a.png") == hashlib.sha256(b"abc").hexdigest()
    assert not store.exists("../a.png")
    with pytest.raises(UnsafePathError):
        store.read("../../etc/passwd")
    with pytest.raises(FileNotFoundError):
        store.read("missing.png")


def test_memory_input_store() -> None:
    store = MemoryInputStore({"x.png": b"1"})
    assert store.names() == ["x.png"] and store.exists("x.png")
    with pytest.raises(FileNotFoundError):
        store.read("y.png")


def test_split_prefix() -> None:
    assert split_prefix("latents/r08") == ("latents", "r08")
    assert split_prefix("r01") == ("", "r01")
    assert split_prefix("a/./b/../c") == ("a", "c")
    for bad in ("../x", "/abs/x", "a/../../x"):
        with pytest.raises(UnsafePathError):
            split_prefix(bad)


def test_counters() -> None:
    names = ["r01_00001_.png", "r01_00007_.png", "r01x_00009_.png", "other.png"]
    assert counter_after("r01", names) == 8
    assert counter_after("new", names) == 1


def test_sinks(tmp_path: Path) -> None:
    file = OutputFile("3", "r01_00001_.png", "sub", "output", b"png", "image/png")
    sink = DirectoryOutputSink(tmp_path / "out", tmp_path / "tmp")
    assert isinstance(sink, OutputSink)
    assert sink.next_counter("output", "sub", "r01") == 1
    sink.write(file)
    assert (tmp_path / "out" / "sub" / "r01_00001_.png").read_bytes() == b"png"
    assert sink.next_counter("output", "sub", "r01") == 2
    assert sink.next_counter("temp", "sub", "r01") == 1
    memory = MemoryOutputSink()
    memory.write(file)
    assert memory.next_counter("output", "sub", "r01") == 2
    assert memory.by_path() == {"sub/r01_00001_.png": file}
    assert file.ref() == {"filename": "r01_00001_.png", "subfolder": "sub", "type": "output"}
