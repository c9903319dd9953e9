"""The environment install step on the real ComfyUI 0.3.64, each test in a ComfyUI of its own
(a copy of the source and a venv over the shared install's packages)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from comfyfleet.workflow.runner import CancelToken
from services.executor.comfyui import ComfyUIEngine
from services.executor.comfyui.install import Installer, InstallError, InstallSpec
from services.executor.engine import EngineJob, EngineResult
from tests.integration.executor.comfyui.conftest import assert_matches_reference, real_settings
from tests.support.paths import REPO_ROOT
from tests.support.real_comfyui import (
    CHECKPOINT_NAME,
    CHECKPOINT_SHA256,
    COMFYUI_VERSION,
    RealComfyUI,
    comfyui_copy,
)

TEST_NODES = REPO_ROOT / "tests" / "data" / "custom_nodes" / "comfyfleet_test_nodes"
BROKEN_NODE = REPO_ROOT / "tests" / "data" / "custom_nodes" / "broken_node"
# Solid magenta, inverted: green.
SOLID_INVERTED = {
    "1": {"class_type": "ComfyfleetSolid", "inputs": {"width": 8, "height": 4, "color": 0xFF00FF}},
    "2": {"class_type": "ComfyfleetInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
}
# Sampled images differ from the references by a step in a few values on this CPU (see
# test_real_engine.py).
SAMPLED_TOLERANCE = 1


@pytest.fixture
def comfyui(real_comfyui: RealComfyUI, tmp_path: Path) -> RealComfyUI:
    return comfyui_copy(real_comfyui, tmp_path / "comfyui")


def install(
    comfyui: RealComfyUI, spec: dict[str, Any], spec_dir: Path
) -> subprocess.CompletedProcess[str]:
    """The install step's command line, as an image build runs it."""
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "env.json").write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "services.executor.comfyui.install", "--spec", "env.json"]
    argv += ["--comfyui-dir", str(comfyui.source_dir), "--python", str(comfyui.python)]
    return subprocess.run(
        argv, cwd=spec_dir, env=_env(), capture_output=True, text=True, timeout=600, check=False
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def wheel(dest: Path, name: str, value: str) -> Path:
    """A pure-Python wheel of one module ``name`` holding ``VALUE = value`` (pip installs a
    wheel file without the network)."""
    dist = f"{name}-0.1"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: comfyfleet-tests\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{path},sha256={_record_digest(text.encode())},{len(text.encode())}"
        for path, text in files.items()
    ]
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    path = dest / f"{dist}-py3-none-any.whl"
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name_in_zip, text in files.items():
            archive.writestr(name_in_zip, text)
    return path


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def imports(python: Path, module: str) -> str | None:
    """``module.VALUE`` as ``python`` imports it; None when it cannot."""
    code = f"import {module}; print({module}.VALUE)"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def run_on(
    comfyui: RealComfyUI, work_dir: Path, workflow: dict[str, Any]
) -> tuple[ComfyUIEngine, EngineResult]:
    """``workflow`` run by a started-mode engine on ``comfyui``, with no model linked."""
    engine = ComfyUIEngine(real_settings(comfyui), "cpu", work_dir / "engine")
    try:
        engine.start()
        (work_dir / "inputs").mkdir(parents=True, exist_ok=True)
        job = EngineJob(json.dumps(workflow), work_dir / "inputs")
        return engine, engine.run(job, lambda _: None, CancelToken())
    finally:
        engine.close()


def test_custom_nodes_and_packages_are_installed_and_their_nodes_run(
    comfyui: RealComfyUI, real_comfyui: RealComfyUI, tmp_path: Path
) -> None:
    spec_dir = tmp_path / "spec"
    # A package of the spec's own folder, which needs a Python package from its requirements.
    needs_dep = spec_dir / "needs_dep"
    needs_dep.mkdir(parents=True)
    (needs_dep / "requirements.txt").write_text(
        f"{wheel(tmp_path / 'wheels', 'cf_dep_probe', 'dep')}\n"
    )
    (needs_dep / "__init__.py").write_text(
        "import cf_dep_probe\n\n\nclass Probe:\n    CATEGORY = 'test'\n    RETURN_TYPES = ('INT',)\n"
        "    FUNCTION = 'f'\n\n    @classmethod\n    def INPUT_TYPES(cls):\n        return {'required': {}}\n\n"
        "    def f(self):\n        return (1,)\n\n\nNODE_CLASS_MAPPINGS = {'ComfyfleetDepProbe': Probe}\n"
    )
    spec = {
        "name": "test-nodes",
        "engine": "comfyui",
        "comfyui_version": COMFYUI_VERSION,
        "custom_nodes": [
            {"name": "comfyfleet_test_nodes", "source": str(TEST_NODES)},
            {"name": "needs_dep", "source": "needs_dep"},
        ],
        "python_packages": [str(wheel(tmp_path / "wheels", "cf_extra_probe", "extra"))],
    }

    done = install(comfyui, spec, spec_dir)

    assert done.returncode == 0, done.stderr
    nodes_dir = comfyui.source_dir / "custom_nodes"
    assert (nodes_dir / "comfyfleet_test_nodes" / "__init__.py").read_bytes() == (
        TEST_NODES / "__init__.py"
    ).read_bytes()
    assert (nodes_dir / "needs_dep" / "requirements.txt").is_file()
    # Into this ComfyUI's Python; the shared install is untouched.
    assert imports(comfyui.python, "cf_dep_probe") == "dep"
    assert imports(comfyui.python, "cf_extra_probe") == "extra"
    assert imports(real_comfyui.python, "cf_extra_probe") is None
    assert not (real_comfyui.source_dir / "custom_nodes" / "comfyfleet_test_nodes").exists()

    engine, result = run_on(comfyui, tmp_path / "run", SOLID_INVERTED)

    assert {"ComfyfleetSolid", "ComfyfleetInvert", "ComfyfleetDepProbe"} <= set(engine.node_types())
    [file] = result.files
    pixels = np.asarray(Image.open(io.BytesIO(file.data)))
    assert pixels.shape == (4, 8, 3)
    assert {tuple(p) for p in pixels.reshape(-1, 3)} == {(0, 255, 0)}


def test_a_package_that_fails_to_import_fails_the_install_naming_it(
    comfyui: RealComfyUI, tmp_path: Path
) -> None:
    spec = {
        "name": "broken",
        "custom_nodes": [
            {"name": "comfyfleet_test_nodes", "source": str(TEST_NODES)},
            {"name": "broken_node", "source": str(BROKEN_NODE)},
        ],
    }

    done = install(comfyui, spec, tmp_path / "spec")

    assert done.returncode == 1
    failure = done.stderr[done.stderr.index("install failed: ") :]
    assert failure == (
        "install failed: the environment does not work:\n"
        "  custom node package 'broken_node' failed to import (IMPORT FAILED):"
        " RuntimeError: broken_node is broken on purpose\n"
    )


def test_a_baked_model_is_offered_and_t01_runs_without_linking_one(
    comfyui: RealComfyUI, real_comfyui: RealComfyUI, tmp_path: Path
) -> None:
    model = {
        "folder": "checkpoints",
        "name": CHECKPOINT_NAME,
        "path": str(real_comfyui.checkpoint),
        "sha256": CHECKPOINT_SHA256,
    }

    done = install(comfyui, {"name": "baked", "models": [model]}, tmp_path / "spec")

    assert done.returncode == 0, done.stderr
    assert (comfyui.source_dir / "models" / "checkpoints" / CHECKPOINT_NAME).is_file()
    workflow = json.loads(real_comfyui.workflow("t01_txt2img"))
    engine = ComfyUIEngine(real_settings(comfyui), "cpu", tmp_path / "engine")
    try:
        engine.start()
        with urllib.request.urlopen(f"{engine.base_url}/object_info/CheckpointLoaderSimple") as r:
            info = json.load(r)
        choices = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        assert CHECKPOINT_NAME in choices
        (tmp_path / "inputs").mkdir()
        result = engine.run(
            EngineJob(json.dumps(workflow), tmp_path / "inputs"), lambda _: None, CancelToken()
        )
    finally:
        engine.close()
    reference = real_comfyui.reference_dir("t01_txt2img")
    assert_matches_reference(result.files, reference, SAMPLED_TOLERANCE)


def test_a_git_source_is_installed_at_its_pinned_revision(
    comfyui: RealComfyUI, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "__init__.py").write_text((TEST_NODES / "__init__.py").read_text())
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    pinned = subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()
    (repo / "later.txt").write_text("after the pinned revision")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "second"], check=True)
    doc = {"custom_nodes": [{"name": "pinned", "source": str(repo), "revision": pinned}]}

    Installer(InstallSpec.parse(doc, tmp_path), comfyui.source_dir, comfyui.python).install(
        verify=False
    )

    installed = comfyui.source_dir / "custom_nodes" / "pinned"
    assert (installed / "__init__.py").is_file()
    assert not (installed / "later.txt").exists()
    head = subprocess.check_output(["git", "-C", str(installed), "rev-parse", "HEAD"], text=True)
    assert head.strip() == pinned


def test_a_model_whose_sha256_differs_is_refused(comfyui: RealComfyUI, tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"not the model")
    doc = {
        "models": [
            {
                "folder": "loras",
                "name": "x.safetensors",
                "path": "model.safetensors",
                "sha256": "0" * 64,
            }
        ]
    }
    installer = Installer(InstallSpec.parse(doc, tmp_path), comfyui.source_dir, comfyui.python)

    with pytest.raises(InstallError, match=r"model loras/x.safetensors: sha256 is [0-9a-f]{64}"):
        installer.install(verify=False)

    loras = comfyui.source_dir / "models" / "loras"
    assert sorted(p.name for p in loras.iterdir() if p.name.startswith("x.safetensors")) == []


def test_another_comfyui_version_is_refused(comfyui: RealComfyUI, tmp_path: Path) -> None:
    spec = InstallSpec.parse({"comfyui_version": "0.3.99"}, tmp_path)

    with pytest.raises(InstallError, match=r"wants ComfyUI 0\.3\.99, .* is 0\.3\.64"):
        Installer(spec, comfyui.source_dir, comfyui.python).install(verify=False)
