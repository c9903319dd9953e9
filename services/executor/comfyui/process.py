"""A ComfyUI process the engine starts, watches and restarts.

The engine adds the flags that tie the process to it: a loopback port of its own, and the
input and output folders it fills and reads. ComfyUI's own output goes to a log file whose
tail explains a failed start or a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from comfyfleet.workflow.io import safe_relative
from services.executor.comfyui.client import ComfyUIUnavailable

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 2000
# Between readiness probes of a starting ComfyUI (wait_answering).
READY_POLL_S = 0.2
# ComfyUI's model folders; each is pointed at <root>/models/<folder> through
# --extra-model-paths-config, where the engine links each run's models.
MODEL_FOLDERS = (
    "audio_encoders",
    "checkpoints",
    "classifiers",
    "clip",
    "clip_vision",
    "configs",
    "controlnet",
    "diffusers",
    "diffusion_models",
    "embeddings",
    "gligen",
    "hypernetworks",
    "loras",
    "model_patches",
    "photomaker",
    "style_models",
    "text_encoders",
    "unet",
    "upscale_models",
    "vae",
    "vae_approx",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def device_flags(device: str) -> list[str]:
    """ComfyUI's flags for the executor's torch device ("cpu", "cuda:1")."""
    if device == "cpu":
        return ["--cpu"]
    if device.startswith("cuda:"):
        return ["--cuda-device", device.removeprefix("cuda:")]
    return []


def _prune(folder: str, wanted: Mapping[str, str]) -> bool:
    """Unlinks everything under ``folder`` but the ``wanted`` links (path -> target) and
    removes the subfolders that leaves empty; True when something is left in ``folder``."""
    left = False
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_symlink() and wanted.get(entry.path) == os.readlink(entry.path):
                left = True
            elif entry.is_dir(follow_symlinks=False):
                if _prune(entry.path, wanted):
                    left = True
                else:
                    os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
    return left


class ComfyUIProcess:
    """One ComfyUI server process at a time, in its own process group."""

    def __init__(self, argv: Sequence[str], root: Path, device: str) -> None:
        self.argv = list(argv)
        self.root = root
        self.device = device
        self.input_dir = root / "input"
        self.output_dir = root / "output"
        # ComfyUI's own state (settings, its database, scratch files), kept out of its source
        # tree so that an image may mount that read-only.
        self.user_dir = root / "user"
        self.temp_dir = root / "temp"
        self.models_dir = root / "models"
        self.model_paths_config = root / "extra_model_paths.yaml"
        self.log_path = root / "comfyui.log"
        self.base_url = ""
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Starts ComfyUI (stopping an earlier process) and returns its base URL."""
        self.stop()
        for folder in (
            self.input_dir,
            self.output_dir,
            self.models_dir,
            self.user_dir,
            self.temp_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        self._write_model_paths()
        port = _free_port()
        argv = [
            *self.argv,
            *("--listen", "127.0.0.1", "--port", str(port)),
            *("--input-directory", str(self.input_dir)),
            *("--output-directory", str(self.output_dir)),
            *("--user-directory", str(self.user_dir)),
            *("--temp-directory", str(self.temp_dir)),
            *("--database-url", f"sqlite:///{self.user_dir / 'comfyui.db'}"),
            *("--extra-model-paths-config", str(self.model_paths_config)),
            *device_flags(self.device),
        ]
        log.info("starting ComfyUI: %s", " ".join(argv))
        with open(self.log_path, "ab") as out:
            # A process group of its own, so stopping it stops whatever it started too.
            self._popen = subprocess.Popen(
                argv, cwd=self.root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    def _write_model_paths(self) -> None:
        # ComfyUI's format: a section with base_path and one "<folder>: <path>" per folder.
        lines = ["comfyfleet:", f"    base_path: {json.dumps(str(self.models_dir))}"]
        lines += [f"    {folder}: {folder}/" for folder in MODEL_FOLDERS]
        self.model_paths_config.write_text("\n".join(lines) + "\n")

    def link_models(self, models: Mapping[str, Path]) -> None:
        """Makes exactly ``models`` ("<folder>/<name>" -> file) visible to ComfyUI.

        Only what changed is touched: ComfyUI rescans its model folders (a walk of every one)
        when a folder changes, and most runs need the models the run before them had.
        Anything else found there (left by a custom node, say) goes.
        """
        wanted = {
            str(self.models_dir / safe_relative(key)): str(path.resolve())
            for key, path in models.items()
        }
        root = str(self.models_dir)
        os.makedirs(root, exist_ok=True)
        present = set()
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    # ComfyUI's folders stay, emptied or not.
                    _prune(entry.path, wanted)
                    present.add(entry.name)
                else:
                    os.unlink(entry.path)
        for folder in MODEL_FOLDERS:
            if folder not in present:
                os.mkdir(os.path.join(root, folder))
        for link, target in wanted.items():
            if not os.path.islink(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(target, link)

    def wait_answering(self, timeout_s: float) -> None:
        """Blocks until the started ComfyUI answers ``GET /system_stats``.

        For callers without an event loop (install checks, test fixtures); the engine waits
        its own way. Raises :class:`ComfyUIUnavailable`, with the log's tail, when the process
        exits first or ``timeout_s`` passes.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.exit_code()
            if code is not None:
                raise ComfyUIUnavailable(
                    f"ComfyUI exited with code {code} while starting; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/system_stats", timeout=5):
                    return
            except (urllib.error.URLError, OSError) as err:
                if time.monotonic() >= deadline:
                    raise ComfyUIUnavailable(
                        f"ComfyUI did not answer within {timeout_s:g}s: {err}; "
                        f"its log ends with:\n{self.log_tail()}"
                    ) from err
            time.sleep(READY_POLL_S)

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def exit_code(self) -> int | None:
        """None while it runs (or was never started)."""
        return None if self._popen is None else self._popen.poll()

    def stop(self, grace_s: float = 5.0) -> None:
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        self._signal(popen, signal.SIGTERM)
        try:
            popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._signal(popen, signal.SIGKILL)
            popen.wait()

    @staticmethod
    def _signal(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, sig)

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
