"""The real ComfyUI 0.3.64 for tests and benchmarks, installed once per machine.

The material (ComfyUI's source archive, ``install.sh``, ``make_checkpoint.py``, workflows and
reference outputs) is found through ``$COMFYFLEET_COMFYUI_SERVER``, else
``<repo>/../shared/comfyui-server``. ComfyUI is installed outside the clone, in
``$XDG_CACHE_HOME/comfyfleet/comfyui-0.3.64`` (``~/.cache`` by default), together with the
test checkpoint; a file lock makes concurrent test processes wait for one install.
ComfyUI is GPL-3.0: it only ever runs as its own process.

    real_comfyui     -> RealComfyUI     (session)  the install: command line, checkpoint, material
    comfyui_copy(real, dir) -> RealComfyUI          a ComfyUI of a test's own to install into
    comfyui_server   -> RunningComfyUI  (session)  a ComfyUI on a free port (URL mode), its own
                                                   input/output dirs, the checkpoint as a model

Nothing here skips: missing material fails the test with what to set.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.executor.comfyui.process import ComfyUIProcess
from tests.support.paths import REPO_ROOT

SERVER_ENV = "COMFYFLEET_COMFYUI_SERVER"
COMFYUI_VERSION = "0.3.64"
CHECKPOINT_NAME = "tiny-sd15.safetensors"
CHECKPOINT_SHA256 = "8e4829299ddc1c75ec051fc5d1dbbd4d7d160371bea12ebcfd992f8e2b6cfb8c"
# The key under which a job links the checkpoint (EngineJob.models).
CHECKPOINT_KEY = f"checkpoints/{CHECKPOINT_NAME}"
# ComfyUI imports torch and every node package before it listens: seconds on an idle machine,
# much longer on a busy one.
STARTUP_TIMEOUT_S = 180.0
# install.sh takes minutes with a cold pip cache.
INSTALL_TIMEOUT_S = 1800.0
_MATERIAL = ("install.sh", "make_checkpoint.py", f"ComfyUI-{COMFYUI_VERSION}.tar.gz")


class RealComfyUIMissing(RuntimeError):
    """The real ComfyUI's material is not where it was looked for."""


def server_material() -> Path:
    """``$COMFYFLEET_COMFYUI_SERVER``, else ``<repo>/../shared/comfyui-server``; checked."""
    configured = os.environ.get(SERVER_ENV)
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "comfyui-server"
    missing = [name for name in _MATERIAL if not (path / name).is_file()]
    if missing:
        raise RealComfyUIMissing(
            f"the real ComfyUI's material is not in {path} (missing {', '.join(missing)}): "
            f"set ${SERVER_ENV} to the folder holding install.sh, make_checkpoint.py and "
            f"ComfyUI-{COMFYUI_VERSION}.tar.gz"
        )
    return path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comfyfleet"


@dataclass(frozen=True)
class RealComfyUI:
    """An installed ComfyUI and the test checkpoint."""

    material: Path
    install_dir: Path
    checkpoint: Path

    @property
    def python(self) -> Path:
        return self.install_dir / "venv" / "bin" / "python"

    @property
    def source_dir(self) -> Path:
        """``ComfyUI/``: main.py, comfy/, nodes.py, custom_nodes/ ..."""
        return self.install_dir / "ComfyUI"

    def argv(self, *flags: str, source_dir: Path | None = None) -> list[str]:
        """ComfyUI's command line without the flags the engine adds (port, folders, device)."""
        main = (source_dir or self.source_dir) / "main.py"
        return [str(self.python), str(main), "--disable-auto-launch", *flags]

    def command(self, *flags: str, source_dir: Path | None = None) -> str:
        """For ``ComfyUISettings(command=...)``: a started-mode engine runs this ComfyUI."""
        return shlex.join(self.argv(*flags, source_dir=source_dir))

    @property
    def models(self) -> dict[str, Path]:
        """For ``EngineJob.models``: the checkpoint under the name the workflows use."""
        return {CHECKPOINT_KEY: self.checkpoint}

    def workflow(self, name: str) -> str:
        """The text of ``workflows/<name>.json`` (t01_txt2img, t02_img2img, ...)."""
        return (self.material / "workflows" / f"{name}.json").read_text()

    def reference_dir(self, name: str) -> Path:
        return self.material / "reference" / name

    def reference_result(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.reference_dir(name) / "result.json").read_text())
        return result


@contextlib.contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """Held by one process on this machine at a time (other test runs wait)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(material: Path, install_dir: Path) -> None:
    if (install_dir / ".installed").is_file():
        return
    done = subprocess.run(
        ["bash", str(material / "install.sh"), str(install_dir)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{material / 'install.sh'} {install_dir} failed with code {done.returncode}:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _make_checkpoint(material: Path, python: Path, path: Path) -> None:
    """Writes the checkpoint once; a stamp beside it spares later sessions the hashing."""
    stamp = path.with_name(path.name + ".sha256")
    if path.is_file() and stamp.is_file():
        mark = f"{CHECKPOINT_SHA256} {path.stat().st_size} {path.stat().st_mtime_ns}"
        if stamp.read_text().strip() == mark:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and moved in, so a killed run never leaves half a checkpoint.
    partial = path.with_name(path.name + ".partial")
    done = subprocess.run(
        [str(python), str(material / "make_checkpoint.py"), str(partial)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"make_checkpoint.py failed with code {done.returncode}:\n{done.stderr}")
    got = file_sha256(partial)
    if got != CHECKPOINT_SHA256:
        raise RuntimeError(f"make_checkpoint.py wrote sha256 {got}, expected {CHECKPOINT_SHA256}")
    partial.replace(path)
    stamp.write_text(f"{CHECKPOINT_SHA256} {path.stat().st_size} {path.stat().st_mtime_ns}\n")


def ensure_real_comfyui() -> RealComfyUI:
    """Installs ComfyUI and writes the checkpoint unless this machine has them; blocking."""
    material = server_material()
    install_dir = cache_root() / f"comfyui-{COMFYUI_VERSION}"
    real = RealComfyUI(material, install_dir, cache_root() / "models" / CHECKPOINT_NAME)
    with _machine_lock(f"comfyui-{COMFYUI_VERSION}"):
        _install(material, install_dir)
        _make_checkpoint(material, real.python, real.checkpoint)
    return real


def comfyui_copy(real: RealComfyUI, dest: Path) -> RealComfyUI:
    """A ComfyUI of its own to install into, made in a second or two: a copy of the source
    tree (16 MiB) and a venv that sees the shared install's packages and takes new ones into
    its own site-packages, so nothing done to it touches the shared install."""
    shutil.copytree(
        real.source_dir,
        dest / "ComfyUI",
        symlinks=True,
        ignore=shutil.ignore_patterns("user", "output", "temp", "input"),
    )
    subprocess.run(
        [str(real.python), "-m", "venv", "--without-pip", str(dest / "venv")], check=True
    )
    copy = RealComfyUI(real.material, dest, real.checkpoint)
    shared, own = (_site_packages(python) for python in (real.python, copy.python))
    # site.addsitedir, unlike a bare path, also runs the shared packages' own .pth files.
    (own / "comfyfleet-shared.pth").write_text(f"import site; site.addsitedir({str(shared)!r})\n")
    return copy


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


@dataclass(frozen=True)
class RunningComfyUI:
    """A ComfyUI process reached by URL, with its own folders."""

    url: str
    input_dir: Path
    output_dir: Path
    log_path: Path
    process: ComfyUIProcess

    def log_tail(self) -> str:
        return self.process.log_tail()


@contextlib.contextmanager
def running_comfyui(
    real: RealComfyUI,
    work_dir: Path,
    *flags: str,
    models: Mapping[str, Path] | None = None,
    source_dir: Path | None = None,
) -> Iterator[RunningComfyUI]:
    """A ComfyUI on a free loopback port with ``work_dir``'s input/output/models folders;
    ``models`` ("<folder>/<name>" -> file, the checkpoint by default) linked in. Stopped after."""
    process = ComfyUIProcess(real.argv(*flags, source_dir=source_dir), work_dir, "cpu")
    process.link_models(real.models if models is None else models)
    try:
        url = process.start()
        process.wait_answering(STARTUP_TIMEOUT_S)
        yield RunningComfyUI(url, process.input_dir, process.output_dir, process.log_path, process)
    finally:
        process.stop()


def _fail_if_missing() -> RealComfyUI:
    try:
        return ensure_real_comfyui()
    except RealComfyUIMissing as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def real_comfyui() -> RealComfyUI:
    """The installed ComfyUI (installed now when this machine lacks it) and the checkpoint."""
    return _fail_if_missing()


@pytest.fixture(scope="session")
def comfyui_server(real_comfyui: RealComfyUI) -> Iterator[RunningComfyUI]:
    """One ComfyUI for the session, reached by URL, with the checkpoint as a model."""
    with (
        tempfile.TemporaryDirectory(prefix="comfyfleet-comfyui-") as work_dir,
        running_comfyui(real_comfyui, Path(work_dir)) as server,
    ):
        yield server
