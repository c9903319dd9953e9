"""Issue 11 against the real ComfyUI 0.3.64: tenants sharing one ComfyUI (a process the engine
starts, or one reached by URL) never get anything of each other's back, and a tenant still
gets its own cached results.

The started-mode ComfyUI also loads a custom node that reports the inputs its function was
called with, which shows that ComfyUI hands the salt input to no node function.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.executor.comfyui import ComfyUIEngine, ComfyUISettings
from services.executor.comfyui.isolation import SALT_INPUT
from services.executor.engine import EngineJob, EngineResult, tenant_scope
from tests.integration.executor.comfyui.conftest import (
    REAL_RUN_TIMEOUT_S,
    real_settings,
    run_engine,
)
from tests.support.paths import comfyui_ref
from tests.support.real_comfyui import RealComfyUI, RunningComfyUI
from tests.support.tenant_leak import (
    assert_no_trace_of_a,
    png_prompt,
    tenant_a_workflow,
    tenant_b_workflow,
)

SECRET = b"one secret for the engines sharing a ComfyUI"
# A node of our own: an output node whose ui lists the inputs its function received.
ECHO_NODE = """
class EchoInputs:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"default": 1})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, **inputs):
        names = ",".join(sorted(inputs))
        return {"ui": {"text": [names]}, "result": (names,)}


NODE_CLASS_MAPPINGS = {"EchoInputs": EchoInputs}
"""


def tenants() -> tuple[str, str]:
    """Two tenants no other test used, so each starts with folders of its own."""
    tag = uuid.uuid4().hex[:8]
    return tenant_scope(f"a-{tag}"), tenant_scope(f"b-{tag}")


def job(tmp_path: Path, workflow: dict[str, Any], scope: str) -> EngineJob:
    inputs = tmp_path / f"inputs-{uuid.uuid4().hex[:8]}"
    inputs.mkdir()
    return EngineJob(json.dumps(workflow), inputs, cache_scope=scope)


async def result_of(engine: ComfyUIEngine, job: EngineJob) -> EngineResult:
    run = await run_engine(engine, job, timeout=REAL_RUN_TIMEOUT_S)
    assert run.result is not None
    return run.result


def assert_is_own_file(result: EngineResult, workflow: dict[str, Any]) -> None:
    """One file, embedding exactly ``workflow`` (these nodes have no ``is_changed``)."""
    [file] = result.files
    assert png_prompt(file.data) == workflow
    assert SALT_INPUT.encode() not in file.data and b"comfyfleet-" not in file.data
    assert (file.filename, file.subfolder) == ("ComfyUI_00001_.png", "")


@pytest.fixture(scope="module")
def started(
    real_comfyui: RealComfyUI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComfyUIEngine]:
    """A started ComfyUI, with the echo node among its custom nodes."""
    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes" / "echo_inputs").mkdir(parents=True)
    (base / "custom_nodes" / "echo_inputs" / "__init__.py").write_text(ECHO_NODE)
    settings = real_settings(
        real_comfyui, command=real_comfyui.command("--base-directory", str(base))
    )
    engine = ComfyUIEngine(settings, "cpu", tmp_path_factory.mktemp("comfyui"))
    try:
        engine.start()
        yield engine
    finally:
        engine.close()


def url_engine(server: RunningComfyUI, tmp_path: Path, name: str) -> ComfyUIEngine:
    settings = ComfyUISettings(url=server.url, poll_s=0.2)
    return ComfyUIEngine(settings, "cpu", tmp_path / name, cache_secret=SECRET)


@pytest.fixture
async def url_engines(
    comfyui_server: RunningComfyUI, tmp_path: Path
) -> tuple[ComfyUIEngine, ComfyUIEngine]:
    """Two executors' engines sharing one ComfyUI by URL (and one secret)."""
    engines = (
        url_engine(comfyui_server, tmp_path, "one"),
        url_engine(comfyui_server, tmp_path, "two"),
    )
    for engine in engines:
        await asyncio.to_thread(engine.start)
    return engines


# ------------------------------------------------------------------ started mode


async def last_history_entry(engine: ComfyUIEngine) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{engine.base_url}/history", params={"max_items": "1"}) as response,
    ):
        history: dict[str, Any] = await response.json()
    [entry] = history.values()
    return entry


async def test_started_comfyui_hands_the_salt_to_no_node(
    started: ComfyUIEngine, tmp_path: Path
) -> None:
    a, _ = tenants()
    # A client's own value for the salt input, even a link (which ComfyUI would hand to the
    # function), is overwritten by a literal salt.
    probe = {
        "1": {"class_type": "EchoInputs", "inputs": {"x": 3, SALT_INPUT: ["2", 0]}},
        "2": {"class_type": "PrimitiveString", "inputs": {"value": "forged"}},
    }

    result = await result_of(started, job(tmp_path, probe, a))

    assert result.files == ()
    entry = await last_history_entry(started)
    sent = entry["prompt"][2]["1"]["inputs"]
    assert isinstance(sent[SALT_INPUT], str) and sent[SALT_INPUT] != "forged"
    # ComfyUI accepted the undeclared input and called the node with its declared one only.
    assert entry["outputs"]["1"]["text"] == ["x"]


async def test_started_b_never_gets_as_file(started: ComfyUIEngine, tmp_path: Path) -> None:
    a, b = tenants()
    first = await result_of(started, job(tmp_path, tenant_a_workflow(), a))
    second = await result_of(started, job(tmp_path, tenant_b_workflow(), b))

    assert second.cached_nodes == ()
    assert_no_trace_of_a(second.files[0].data)
    assert_is_own_file(second, tenant_b_workflow())
    # A's file holds A's prompt, as A submitted it.
    assert png_prompt(first.files[0].data) == tenant_a_workflow()


async def test_started_a_tenant_keeps_its_cache(started: ComfyUIEngine, tmp_path: Path) -> None:
    a, _ = tenants()
    first = await result_of(started, job(tmp_path, tenant_a_workflow(), a))
    again = await result_of(started, job(tmp_path, tenant_a_workflow(), a))
    other = await result_of(started, job(tmp_path, tenant_b_workflow(), a))

    assert again.cached_nodes == ("1", "3") and again.files == first.files
    # Another prompt of the tenant: the image is reused, the file embedding A's is not.
    assert other.cached_nodes == ("1",)
    assert png_prompt(other.files[0].data) == tenant_b_workflow()
    assert other.files[0].filename == "ComfyUI_00002_.png"


async def test_started_tenants_taking_turns_share_nothing(
    started: ComfyUIEngine, tmp_path: Path
) -> None:
    a, b = tenants()
    for scope in (a, b, a, b):
        result = await result_of(started, job(tmp_path, tenant_b_workflow(), scope))
        assert result.cached_nodes == ()
        assert_is_own_file(result, tenant_b_workflow())


# ------------------------------------------------------------------ URL mode


async def test_url_b_never_gets_as_file(
    url_engines: tuple[ComfyUIEngine, ComfyUIEngine], comfyui_server: RunningComfyUI, tmp_path: Path
) -> None:
    one, two = url_engines
    a, b = tenants()
    await result_of(one, job(tmp_path, tenant_a_workflow(), a))
    second = await result_of(two, job(tmp_path, tenant_b_workflow(), b))

    assert second.cached_nodes == ()
    assert_no_trace_of_a(second.files[0].data)
    assert_is_own_file(second, tenant_b_workflow())
    # In the shared output folder each tenant's files are in a folder of its own.
    saved = {p.parent.name for p in comfyui_server.output_dir.rglob("ComfyUI_00001_.png")}
    assert {one.output_folder(a), one.output_folder(b)} <= saved


async def test_url_two_tenants_racing_identical_graphs(
    url_engines: tuple[ComfyUIEngine, ComfyUIEngine], tmp_path: Path
) -> None:
    one, two = url_engines
    a, b = tenants()
    graph = tenant_b_workflow(color=0x123456)

    ran = await asyncio.gather(
        result_of(one, job(tmp_path, graph, a)), result_of(two, job(tmp_path, graph, b))
    )

    for result in ran:
        assert result.cached_nodes == ()
        assert_is_own_file(result, graph)
    # Each tenant then finds its own results, on either engine. ComfyUI keeps the results of
    # the prompt it ran last only, and the race decides which of the two that was.
    entry = await last_history_entry(one)
    prefix = entry["prompt"][2]["3"]["inputs"]["filename_prefix"]
    last, other_engine = (b, one) if prefix.startswith(one.output_folder(b) + "/") else (a, two)
    again = await result_of(other_engine, job(tmp_path, graph, last))
    assert again.cached_nodes == ("1", "3") and again.files == ran[(a, b).index(last)].files


async def test_url_inputs_are_uploaded_per_tenant(
    url_engines: tuple[ComfyUIEngine, ComfyUIEngine], comfyui_server: RunningComfyUI, tmp_path: Path
) -> None:
    one, _ = url_engines
    a, b = tenants()
    shapes = (comfyui_ref() / "inputs" / "shapes.png").read_bytes()
    graph = json.loads((comfyui_ref() / "workflows" / "r01_invert.json").read_text())
    results = []
    for scope in (a, b):
        submitted = job(tmp_path, graph, scope)
        (submitted.input_dir / "shapes.png").write_bytes(shapes)
        results.append(await result_of(one, submitted))

    names = [one.upload_name(scope, shapes, "shapes.png") for scope in (a, b)]
    assert names[0] != names[1]
    for name in names:
        assert (comfyui_server.input_dir / name).read_bytes() == shapes
    # B loaded its own upload: nothing cached, and its file names the input as B named it.
    assert results[1].cached_nodes == ()
    [file] = results[1].files
    assert png_prompt(file.data)["1"]["inputs"] == {"image": "shapes.png"}
