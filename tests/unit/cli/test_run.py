"""``comfyfleet run``: the reference workflows in-process, their files, errors and exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyfleet.cli import run as local_run
from comfyfleet.cli.main import main
from tests.support.paths import REPO_ROOT, comfyui_ref

REF = comfyui_ref()
REFERENCE_WORKFLOWS = sorted(p.name for p in (REF / "reference").iterdir())
INPUTS = [f"--input={name}={REF / 'inputs' / name}" for name in ("shapes.png", "alpha.png")]


def workflow(name: str) -> str:
    return str(REF / "workflows" / f"{name}.json")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["run", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"), dtype=np.int16)


def test_r01_writes_the_reference_image_and_prints_its_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"

    code, lines, err = run(
        capsys, workflow("r01_invert"), *INPUTS, "--out", str(out), "--device=cpu"
    )

    assert code == 0, err
    assert lines == [str(out / "r01_00001_.png")]
    reference = (REF / "reference" / "r01_invert" / "node3_images_0.png").read_bytes()
    assert np.abs(pixels((out / "r01_00001_.png").read_bytes()) - pixels(reference)).max() <= 1


def test_progress_is_printed_per_node(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, workflow("a_tiny"), "--out", str(tmp_path), "--device", "cpu")

    progress = [line for line in err.splitlines() if line.startswith("running")]
    assert code == 0
    assert len(progress) == 3
    for line, (done, node, class_type) in zip(
        progress,
        [(1, "1", "EmptyImage"), (2, "2", "ImageInvert"), (3, "3", "SaveImage")],
        strict=True,
    ):
        assert f"] {done}/3 nodes  {class_type}  (node {node}, " in line
    assert err.splitlines()[-1].startswith("done in ")


@pytest.mark.parametrize("name", REFERENCE_WORKFLOWS)
def test_each_reference_workflow_writes_as_many_files_as_comfyui(
    name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    expected = json.loads((REF / "reference" / name / "result.json").read_text())["files"]

    code, lines, err = run(capsys, workflow(name), *INPUTS, "--out", str(tmp_path), "--device=cpu")

    assert code == 0, err
    assert len(lines) == len(expected)
    for path, file in zip(sorted(lines), sorted(expected, key=lambda f: f["file"]), strict=True):
        assert Path(path).is_file()
        if "size" in file:
            assert list(Image.open(path).size) == file["size"]


def test_an_invalid_workflow_prints_every_node_problem_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, lines, err = run(capsys, workflow("invalid_multi_validation"), "--out", str(tmp_path))

    assert code == 2 and lines == []
    first, *violations = err.splitlines()
    assert first.startswith("error: INVALID_ARGUMENT: the workflow is not valid")
    fields = [v.split(":")[0].strip(" -") for v in violations]
    assert fields == [
        'workflow["2"].inputs.image',
        'workflow["1"].inputs.width',
        'workflow["4"].inputs.scale_by',
        'workflow["4"].inputs.upscale_method',
        'workflow["5"].inputs.filename_prefix',
    ]
    assert not any(tmp_path.iterdir())


def test_a_missing_input_file_is_invalid_and_names_the_loader(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, workflow("r01_invert"), "--out", str(tmp_path), "--device=cpu")

    assert code == 2
    assert 'workflow["1"].inputs.image' in err and "shapes.png" in err


def test_a_node_that_raises_fails_the_run_with_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, lines, err = run(
        capsys, workflow("runtime_error"), "--out", str(tmp_path), "--device=cpu"
    )

    assert code == 1 and lines == []
    assert "error: FAILED_PRECONDITION: node 3 (LatentConcat) raised RuntimeError" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.json"], "no workflow file at nope.json"),
        (["{wf}", "--input", "shapes.png"], "--input takes NAME=PATH"),
        (["{wf}", "--input", "shapes.png=/nope.png"], "--input shapes.png: no file at /nope.png"),
        (["{wf}", "--input", "../up.png={png}"], "--input ../up.png: "),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    png = REF / "inputs" / "shapes.png"
    filled = [a.format(wf=workflow("a_tiny"), png=png) for a in args]

    code, _, err = run(capsys, *filled, "--out", str(tmp_path))

    assert code == 2
    assert err.startswith(f"error: {message}")


def test_no_cuda_device_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    code, _, err = run(capsys, workflow("a_tiny"), "--out", str(tmp_path), "--device", "cuda")

    assert code == 2
    assert err == "error: --device cuda: torch sees no CUDA device\n"


@pytest.mark.parametrize(
    ("found", "said"),
    [
        ([EntryPoint("native", "no_torch_here:run", local_run.RUNNERS)], " (No module named "),
        ([], ""),
    ],
)
def test_without_the_executor_it_says_what_to_install(
    found: list[EntryPoint],
    said: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_run, "entry_points", lambda **_: EntryPoints(found))

    code, _, err = run(capsys, workflow("a_tiny"), "--out", str(tmp_path))

    assert code == 2
    assert err.startswith(f"error: comfyfleet run needs the executor{said}")
    assert err.endswith(": pip install 'comfyfleet[executor]'\n")


def test_the_cli_loads_torch_only_for_run() -> None:
    check = "import sys, comfyfleet.cli.main; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, cwd=REPO_ROOT)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `comfyfleet run ... | head -0`: stdout's reader is gone before the first line.
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "comfyfleet.cli.main",
            "run",
            workflow("r09_batch"),
            INPUTS[0],
            f"--out={tmp_path / 'out'}",
            "--device=cpu",
        ],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    os.close(write)
    assert done.returncode == 141, done.stderr
    # It stopped at its first line, as a tool killed by SIGPIPE would, and said nothing.
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
