"""The install step's spec: an Environment's JSON whose models say where to get them."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.executor.comfyui.install import BakedModel, InstallError, InstallSpec, NodePackage

BASE = Path("/specs")
SHA = "ab" * 32


def test_paths_are_relative_to_the_spec_and_urls_stay_as_they_are() -> None:
    doc = {
        "name": "sd15-tools",
        "engine": "comfyui",
        "comfyui_version": "0.3.64",
        "custom_nodes": [
            {"name": "local", "source": "nodes/local"},
            {"name": "remote", "source": "https://github.com/o/r.git", "revision": "abc123"},
            {"name": "ssh", "source": "git@github.com:o/r.git", "revision": "abc123"},
        ],
        "python_packages": ["numpy>=1"],
        "apt_packages": ["ffmpeg"],
        "models": [
            {"folder": "checkpoints", "name": "a.safetensors", "path": "m/a", "sha256": SHA},
            {"folder": "loras", "name": "b.safetensors", "url": "https://x/b"},
        ],
    }

    spec = InstallSpec.parse(doc, BASE)

    assert (spec.name, spec.comfyui_version) == ("sd15-tools", "0.3.64")
    assert spec.custom_nodes == (
        NodePackage("local", "/specs/nodes/local", ""),
        NodePackage("remote", "https://github.com/o/r.git", "abc123"),
        NodePackage("ssh", "git@github.com:o/r.git", "abc123"),
    )
    assert [n.from_git for n in spec.custom_nodes] == [False, True, True]
    assert spec.python_packages == ("numpy>=1",)
    assert spec.apt_packages == ("ffmpeg",)
    assert spec.models == (
        BakedModel("checkpoints", "a.safetensors", SHA, Path("/specs/m/a"), ""),
        BakedModel("loras", "b.safetensors", "", None, "https://x/b"),
    )


def test_a_local_repository_with_a_revision_is_cloned() -> None:
    doc = {"custom_nodes": [{"name": "n", "source": "/repos/n", "revision": "abc"}]}

    [package] = InstallSpec.parse(doc, BASE).custom_nodes

    assert package.from_git


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            {"custom_nodes": [{"name": "r", "source": "https://x/r.git"}]},
            "custom_nodes[0] (r): a git source needs its pinned revision",
        ),
        (
            {"custom_nodes": [{"name": "../up", "source": "/x"}]},
            "custom_nodes[0] (../up): name must be a folder name under custom_nodes/",
        ),
        (
            {"custom_nodes": [{"name": "n"}]},
            "custom_nodes[0] (n): source (a git URL or a path) is required",
        ),
        (
            {"models": [{"folder": "checkpoints", "name": "a.safetensors"}]},
            "models[0] (checkpoints/a.safetensors): path or url is required",
        ),
        (
            {"models": [{"folder": "checkpoints", "name": "a", "path": "a", "sha256": "AB"}]},
            "models[0] (checkpoints/a): sha256 must be 64 lowercase hex digits",
        ),
        (
            {"models": [{"folder": "..", "name": "a", "path": "a"}]},
            "models[0] (../a): ",
        ),
    ],
)
def test_an_invalid_spec_is_refused_naming_the_entry(doc: dict[str, object], problem: str) -> None:
    with pytest.raises(InstallError, match="the spec is invalid") as raised:
        InstallSpec.parse(doc, BASE)

    assert problem in str(raised.value)


def test_fields_an_environment_does_not_have_are_refused() -> None:
    with pytest.raises(InstallError, match=r"the spec is not an environment: .*custom_node"):
        InstallSpec.parse({"custom_node": []}, BASE)


def test_a_model_path_must_be_text() -> None:
    with pytest.raises(InstallError, match="path and url are strings"):
        InstallSpec.parse({"models": [{"folder": "f", "name": "n", "path": 3}]}, BASE)
