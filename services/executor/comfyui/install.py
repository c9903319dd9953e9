"""Installs an environment into a ComfyUI tree, then proves it by starting ComfyUI once.

    python -m services.executor.comfyui.install --spec env.json --comfyui-dir DIR [--python PY]

The spec is an Environment's JSON (proto field names: ``comfyui_version``, ``custom_nodes``
[{name, source, revision}], ``python_packages``, ``apt_packages``, ``models`` [{folder, name,
sha256}]) where each model also says where to get it: ``path`` or ``url``. Relative paths are
relative to the spec file. In order:

1. the system packages (``apt-get install``), when there are any;
2. each custom node package into ``<DIR>/custom_nodes/<name>``: copied from a folder, or
   cloned and checked out at its pinned ``revision`` (a git URL, or a local repository);
   its ``requirements.txt`` pip-installed into ComfyUI's Python;
3. the spec's ``python_packages``, pip-installed into ComfyUI's Python;
4. each model into ``<models-dir>/<folder>/<name>`` (``<DIR>/models`` by default), its
   sha256 checked.

ComfyUI imports custom nodes at start and starts anyway when one fails ("IMPORT FAILED" in
its log). So the install ends by starting it: every package must declare node types in
``/object_info`` and every model must be listed by ``/models/<folder>``, or the install fails
naming the package (with ComfyUI's import error) or the model.

A package's own ``install.py`` (ComfyUI-Manager's convention) is not run: what a package
needs must be in its requirements.txt or in the spec.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.workflow.io import UnsafePathError, safe_relative
from services.executor.comfyui.client import ComfyUIUnavailable
from services.executor.comfyui.process import ComfyUIProcess

log = logging.getLogger(__name__)

# ComfyUI imports torch and every node package before it listens.
VERIFY_TIMEOUT_S = 300.0
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)
_VERSION = re.compile(r"""__version__\s*=\s*["']([^"']+)["']""")
# The first line of an extra_model_paths.yaml this module wrote (and may rewrite).
_OURS = "# written by services.executor.comfyui.install"


class InstallError(Exception):
    """The environment cannot be installed as specified; the message says what and why."""


@dataclass(frozen=True)
class NodePackage:
    name: str
    source: str
    revision: str

    @property
    def from_git(self) -> bool:
        """Cloned at ``revision`` (a URL or a local repository) rather than copied."""
        return bool(self.revision) or _URL.match(self.source) is not None


@dataclass(frozen=True)
class BakedModel:
    folder: str
    name: str
    sha256: str
    path: Path | None
    url: str

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.name}"


@dataclass(frozen=True)
class InstallSpec:
    name: str
    comfyui_version: str
    custom_nodes: tuple[NodePackage, ...]
    python_packages: tuple[str, ...]
    apt_packages: tuple[str, ...]
    models: tuple[BakedModel, ...]

    @classmethod
    def load(cls, path: Path) -> InstallSpec:
        """From a spec file; raises :class:`InstallError` saying what is wrong with it."""
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InstallError(f"{path}: {err}") from None
        if not isinstance(doc, dict):
            raise InstallError(f"{path}: must be a JSON object of the environment's fields")
        return cls.parse(doc, path.resolve().parent)

    @classmethod
    def parse(cls, doc: Mapping[str, Any], base: Path) -> InstallSpec:
        """``doc`` is an Environment's JSON whose models may add ``path``/``url``."""
        models = doc.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise InstallError("models: must be a list of objects")
        # The rest is the Environment message's, checked by its own parser.
        plain = {**doc, "models": [_without(m, "path", "url") for m in models]}
        try:
            env = json_format.ParseDict(plain, environments_pb2.Environment())
        except json_format.ParseError as err:
            raise InstallError(f"the spec is not an environment: {err}") from None
        spec = cls(
            name=env.name,
            comfyui_version=env.comfyui_version,
            custom_nodes=tuple(
                NodePackage(n.name, _source(n.source, base), n.revision) for n in env.custom_nodes
            ),
            python_packages=tuple(env.python_packages),
            apt_packages=tuple(env.apt_packages),
            models=tuple(_baked(m, raw, base) for m, raw in zip(env.models, models, strict=True)),
        )
        spec._check()
        return spec

    def _check(self) -> None:
        problems: list[str] = []
        for i, node in enumerate(self.custom_nodes):
            where = f"custom_nodes[{i}] ({node.name or 'unnamed'})"
            if not node.name or node.name in (".", "..") or "/" in node.name:
                problems.append(f"{where}: name must be a folder name under custom_nodes/")
            if not node.source:
                problems.append(f"{where}: source (a git URL or a path) is required")
            elif _URL.match(node.source) and not node.revision:
                problems.append(f"{where}: a git source needs its pinned revision")
        for i, model in enumerate(self.models):
            where = f"models[{i}] ({model.key})"
            try:
                safe_relative(model.key)
            except UnsafePathError as err:
                problems.append(f"{where}: {err}")
            if model.path is None and not model.url:
                problems.append(f"{where}: path or url is required")
            if model.sha256 and re.fullmatch(r"[0-9a-f]{64}", model.sha256) is None:
                problems.append(f"{where}: sha256 must be 64 lowercase hex digits")
        if problems:
            raise InstallError("the spec is invalid:\n  " + "\n  ".join(problems))


def _without(doc: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def _baked(
    model: environments_pb2.EnvironmentModel, raw: Mapping[str, Any], base: Path
) -> BakedModel:
    path, url = raw.get("path", ""), raw.get("url", "")
    if not isinstance(path, str) or not isinstance(url, str):
        raise InstallError(f"models ({model.folder}/{model.name}): path and url are strings")
    return BakedModel(
        model.folder, model.name, model.sha256, _local(path, base) if path else None, url
    )


def _local(source: str, base: Path) -> Path:
    return base / os.path.expanduser(source)


def _source(source: str, base: Path) -> str:
    """A git URL as it is; a path made absolute (relative to the spec file's folder)."""
    return source if not source or _URL.match(source) else str(_local(source, base))


# ------------------------------------------------------------------ the steps


class Installer:
    """Installs one spec into one ComfyUI tree with one Python."""

    def __init__(
        self,
        spec: InstallSpec,
        comfyui_dir: Path,
        python: Path,
        models_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.comfyui_dir = comfyui_dir.resolve()
        # Absolute, not resolved: a venv's python is a link whose target is outside the venv.
        self.python = Path(os.path.abspath(python))
        self.models_dir = (models_dir or self.comfyui_dir / "models").resolve()

    def install(self, verify: bool = True) -> None:
        self._check_tree()
        if self.spec.apt_packages:
            self._apt()
        for package in self.spec.custom_nodes:
            self._node_package(package)
        if self.spec.python_packages:
            self._pip("the spec's python_packages", *self.spec.python_packages)
        for model in self.spec.models:
            self._model(model)
        if self.models_dir != self.comfyui_dir / "models" and self.spec.models:
            self._point_comfyui_at_models()
        if verify:
            self.verify()

    def _check_tree(self) -> None:
        version_file = self.comfyui_dir / "comfyui_version.py"
        if not (self.comfyui_dir / "main.py").is_file() or not version_file.is_file():
            raise InstallError(f"{self.comfyui_dir} is not a ComfyUI tree (no main.py)")
        found = _VERSION.search(version_file.read_text())
        version = found.group(1) if found else "unknown"
        wanted = self.spec.comfyui_version
        if wanted and wanted != version:
            raise InstallError(f"the spec wants ComfyUI {wanted}, {self.comfyui_dir} is {version}")

    def _apt(self) -> None:
        log.info("installing system packages: %s", " ".join(self.spec.apt_packages))
        _run(["apt-get", "update", "-q"], "apt-get update")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
        _run([*install, *self.spec.apt_packages], "apt-get install of the apt_packages")

    def _node_package(self, package: NodePackage) -> None:
        target = self.comfyui_dir / "custom_nodes" / package.name
        # Replaced whole: a reinstall at another revision must not keep files of the last.
        shutil.rmtree(target, ignore_errors=True)
        if package.from_git:
            self._clone(package, target)
        else:
            source = Path(package.source)
            if not source.is_dir():
                raise InstallError(f"custom node package {package.name!r}: {source} is no folder")
            log.info("copying custom node package %s from %s", package.name, source)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        requirements = target / "requirements.txt"
        if requirements.is_file():
            self._pip(
                f"custom node package {package.name!r}'s requirements", "-r", str(requirements)
            )

    def _clone(self, package: NodePackage, target: Path) -> None:
        source = package.source
        what = f"custom node package {package.name!r}"
        log.info("cloning %s from %s at %s", package.name, source, package.revision)
        _run(
            ["git", "clone", "--quiet", "--no-checkout", source, str(target)], f"{what}: git clone"
        )
        _run(
            ["git", "-C", str(target), "checkout", "--quiet", "--detach", package.revision],
            f"{what}: git checkout of revision {package.revision}",
        )
        _run(
            ["git", "-C", str(target), "submodule", "update", "--quiet", "--init", "--recursive"],
            f"{what}: git submodule update",
        )

    def _pip(self, what: str, *args: str) -> None:
        log.info("pip-installing %s", what)
        pip = [
            str(self.python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ]
        _run([*pip, *args], f"pip install of {what}")

    def _model(self, model: BakedModel) -> None:
        target = self.models_dir / safe_relative(model.key)
        if target.is_file() and model.sha256 and _sha256(target) == model.sha256:
            log.info("model %s is in place", model.key)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        if model.path is not None:
            log.info("placing model %s from %s", model.key, model.path)
            _copy_or_link(model.path, partial, model.key)
        else:
            log.info("downloading model %s from %s", model.key, model.url)
            _download(model.url, partial, model.key)
        got = _sha256(partial)
        if model.sha256 and got != model.sha256:
            partial.unlink()
            raise InstallError(f"model {model.key}: sha256 is {got}, the spec says {model.sha256}")
        partial.replace(target)

    def _point_comfyui_at_models(self) -> None:
        """ComfyUI reads ``extra_model_paths.yaml`` beside its main.py at every start."""
        config = self.comfyui_dir / "extra_model_paths.yaml"
        if config.is_file() and not config.read_text().startswith(_OURS):
            raise InstallError(f"{config} exists; it would have to list {self.models_dir}")
        folders = sorted({model.folder for model in self.spec.models})
        lines = [_OURS, "comfyfleet_baked:", f"    base_path: {json.dumps(str(self.models_dir))}"]
        lines += [f"    {folder}: {folder}/" for folder in folders]
        config.write_text("\n".join(lines) + "\n")

    # -------------------------------------------------------------- the proof

    def verify(self, timeout_s: float = VERIFY_TIMEOUT_S) -> None:
        """Starts ComfyUI once: each package declares node types, each model is listed."""
        log.info("starting ComfyUI to check the installed environment")
        argv = [str(self.python), str(self.comfyui_dir / "main.py"), "--disable-auto-launch"]
        with tempfile.TemporaryDirectory(prefix="comfyfleet-install-") as root:
            process = ComfyUIProcess(argv, Path(root), "cpu")
            try:
                process.start()
                process.wait_answering(timeout_s)
                object_info = _get_json(f"{process.base_url}/object_info")
                listed = {
                    folder: set(_get_json(f"{process.base_url}/models/{folder}"))
                    for folder in {model.folder for model in self.spec.models}
                }
            except ComfyUIUnavailable as err:
                raise InstallError(f"ComfyUI did not start: {err.message}") from None
            finally:
                process.stop()
            comfy_log = process.log_path.read_text(errors="replace")
        problems = [
            *self._missing_nodes(object_info, comfy_log),
            *self._missing_models(listed),
        ]
        if problems:
            raise InstallError("the environment does not work:\n  " + "\n  ".join(problems))
        log.info("every custom node package imported and every model is listed")

    def _missing_nodes(self, object_info: Mapping[str, Any], comfy_log: str) -> list[str]:
        modules = {
            node.get("python_module") for node in object_info.values() if isinstance(node, Mapping)
        }
        return [
            f"custom node package {package.name!r} {_import_failure(package.name, comfy_log)}"
            for package in self.spec.custom_nodes
            if f"custom_nodes.{package.name}" not in modules
        ]

    def _missing_models(self, listed: Mapping[str, set[str]]) -> list[str]:
        return [
            f"model {model.key} is not listed by ComfyUI's /models/{model.folder}"
            for model in self.spec.models
            if model.name not in listed.get(model.folder, set())
        ]


def _import_failure(name: str, comfy_log: str) -> str:
    """What ComfyUI logged about the package ``name``: its import error when it had one."""
    lines = comfy_log.splitlines()
    marker = f"{os.sep}custom_nodes{os.sep}{name} module for custom nodes: "
    for i, line in enumerate(lines):
        if line.startswith("Cannot import ") and marker in line:
            # The traceback ComfyUI logged just before: its last line names the exception.
            error = next((t for t in reversed(lines[max(0, i - 40) : i]) if t and t[0] != " "), "")
            return f"failed to import (IMPORT FAILED): {error or line.split(marker, 1)[1]}"
    if any(
        f"{os.sep}custom_nodes{os.sep}{name} module for custom nodes due to the lack" in line
        for line in lines
    ):
        return "declares no NODE_CLASS_MAPPINGS (ComfyUI skipped it)"
    return "declares no node types in /object_info"


def _run(argv: Sequence[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-4000:]
        raise InstallError(f"{what} failed with code {done.returncode}:\n{output}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_or_link(source: Path, target: Path, key: str) -> None:
    """A hard link where the file system allows it (no second copy of gigabytes)."""
    if not source.is_file():
        raise InstallError(f"model {key}: {source} is no file")
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _download(url: str, target: Path, key: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as err:
        with contextlib.suppress(OSError):
            target.unlink()
        raise InstallError(f"model {key}: download from {url} failed: {err}") from None


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return json.load(response)
    except (OSError, ValueError) as err:
        raise ComfyUIUnavailable(f"GET {url} failed: {err}") from None


# ------------------------------------------------------------------ command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.executor.comfyui.install",
        description="Install an environment spec into a ComfyUI tree and check it starts.",
    )
    parser.add_argument("--spec", type=Path, required=True, help="the environment's JSON file")
    parser.add_argument("--comfyui-dir", type=Path, required=True, help="the ComfyUI tree")
    parser.add_argument(
        "--python", type=Path, default=Path(sys.executable), help="the Python that runs ComfyUI"
    )
    parser.add_argument(
        "--models-dir", type=Path, help="where models go (default: <comfyui-dir>/models)"
    )
    parser.add_argument("--no-verify", action="store_true", help="do not start ComfyUI after")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        spec = InstallSpec.load(args.spec)
        installer = Installer(spec, args.comfyui_dir, args.python, args.models_dir)
        installer.install(verify=not args.no_verify)
    except InstallError as err:
        print(f"install failed: {err}", file=sys.stderr)
        return 1
    print(f"environment {spec.name or args.spec.name} installed in {args.comfyui_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
