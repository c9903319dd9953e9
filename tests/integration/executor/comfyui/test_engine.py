"""The comfyui engine driving a ComfyUI it reaches by URL (the fake, on this event loop)."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from comfyfleet.common.errors import Unavailable
from comfyfleet.workflow.runner import CancelToken
from services.executor.attempt import failure_of
from services.executor.comfyui import ComfyUIEngine, ComfyUISettings, ComfyUIUnavailable
from services.executor.comfyui.engine import LOOP_THREAD_NAME, _names_restored, _renamed
from services.executor.comfyui.process import _free_port
from services.executor.engine import (
    SHARED_SCOPE,
    NodeRaised,
    NodeState,
    RunInterrupted,
    WorkflowRejected,
    tenant_scope,
)
from tests.integration.executor.comfyui.conftest import (
    FAST,
    Run,
    StartEngine,
    StartFake,
    make_job,
    reference_file,
    run_engine,
    workflow_text,
)
from tests.support.eventually import eventually
from tests.support.fake_comfyui import RunningFake, running_fake
from tests.support.fake_comfyui.reference import object_info
from tests.support.paths import comfyui_ref

SHAPES = (comfyui_ref() / "inputs" / "shapes.png").read_bytes()


def uploaded_as(engine: ComfyUIEngine, data: bytes, name: str) -> str:
    """Where the engine puts an input in a ComfyUI it shares: a folder of the job's cache scope
    and the file's digest."""
    folder, _, base = engine.upload_name(SHARED_SCOPE, data, name).partition("/")
    assert re.fullmatch("comfyfleet-[0-9a-f]{32}", folder) and base == name
    return f"{folder}/{base}"


def steps(run: Run) -> list[tuple[NodeState, str]]:
    return [(e.state, e.node_id) for e in run.events if e.state != NodeState.PROGRESS]


async def test_the_node_types_are_comfyuis(engine: ComfyUIEngine) -> None:
    assert engine.name == "comfyui"
    assert list(engine.node_types()) == sorted(object_info())
    assert engine.device == "cpu"


async def test_r01_uploads_its_input_and_returns_comfyuis_output(
    engine: ComfyUIEngine, fake: RunningFake, tmp_path: Path
) -> None:
    job = make_job(tmp_path, workflow_text("r01_invert"), {"shapes.png": SHAPES})

    run = await run_engine(engine, job)

    assert (fake.fake.input_dir / uploaded_as(engine, SHAPES, "shapes.png")).read_bytes() == SHAPES
    assert not (fake.fake.input_dir / "shapes.png").exists()
    assert run.result is not None
    [file] = run.result.files
    assert (file.node_id, file.kind, file.filename, file.subfolder) == (
        "3",
        "images",
        "r01_00001_.png",
        "",
    )
    assert file.content_type == "image/png"
    assert file.data == reference_file("r01_invert", "node3_images_0.png")
    assert steps(run) == [
        (NodeState.RUNNING, "1"),
        (NodeState.DONE, "1"),
        (NodeState.RUNNING, "2"),
        (NodeState.DONE, "2"),
        (NodeState.RUNNING, "3"),
        (NodeState.DONE, "3"),
    ]
    assert [e.nodes_done for e in run.events][-1] == 3
    assert {e.nodes_total for e in run.events} == {3}
    assert run.result.cached_nodes == ()
    # The prompt went out under the client id of the socket the engine listened on.
    [submitted] = fake.fake.submissions
    assert submitted["client_id"] and submitted["prompt"]["3"]["class_type"] == "SaveImage"
    assert submitted["prompt"]["1"]["inputs"]["image"] == uploaded_as(engine, SHAPES, "shapes.png")


async def test_inputs_in_subfolders_keep_their_place(
    engine: ComfyUIEngine, fake: RunningFake, tmp_path: Path
) -> None:
    text = workflow_text("r01_invert").replace('"shapes.png"', '"sub/shapes.png"')

    await run_engine(engine, make_job(tmp_path, text, {"sub/shapes.png": SHAPES}))

    assert (
        fake.fake.input_dir / uploaded_as(engine, SHAPES, "sub/shapes.png")
    ).read_bytes() == SHAPES


async def test_runs_sharing_a_comfyui_never_see_each_others_inputs(
    engine: ComfyUIEngine, fake: RunningFake, tmp_path: Path
) -> None:
    # Two tenants' runs name different files alike: each loads its own, neither overwrites.
    other = SHAPES[:-16] + bytes(16)
    text = workflow_text("r01_invert")
    await run_engine(engine, make_job(tmp_path / "a", text, {"shapes.png": SHAPES}))
    await run_engine(engine, make_job(tmp_path / "b", text, {"shapes.png": other}))

    first, second = (s["prompt"]["1"]["inputs"]["image"] for s in fake.fake.submissions)
    assert first != second
    assert (fake.fake.input_dir / first).read_bytes() == SHAPES
    assert (fake.fake.input_dir / second).read_bytes() == other
    # A run that names a file without sending it does not get what another run uploaded.
    await run_engine(engine, make_job(tmp_path / "c", text, {}))
    assert fake.fake.submissions[-1]["prompt"]["1"]["inputs"]["image"] == "shapes.png"
    assert not (fake.fake.input_dir / "shapes.png").exists()


def test_only_literals_naming_inputs_are_renamed_and_errors_name_them_back() -> None:
    names = {"cat.png": "comfyfleet-00/cat.png", 'we"ird.png': 'comfyfleet-11/we"ird.png'}
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": 'we"ird.png'}},
        "3": {"class_type": "X", "inputs": {"text": "dog.png", "link": ["1", 0], "n": 3}},
    }
    moved = _renamed(prompt, names)
    assert moved["1"]["inputs"]["image"] == "comfyfleet-00/cat.png"
    assert moved["2"]["inputs"]["image"] == 'comfyfleet-11/we"ird.png'
    assert moved["3"] == prompt["3"]
    assert _renamed(prompt, {}) is prompt
    body = {"error": {"message": "Invalid image file: comfyfleet-00/cat.png"}, "node_errors": {}}
    assert _names_restored(body, names) == {
        "error": {"message": "Invalid image file: cat.png"},
        "node_errors": {},
    }


async def test_an_identical_resubmission_comes_from_comfyuis_cache(
    engine: ComfyUIEngine, tmp_path: Path
) -> None:
    inputs = {"shapes.png": SHAPES}
    first = await run_engine(engine, make_job(tmp_path, workflow_text("r01_invert"), inputs))
    again = await run_engine(engine, make_job(tmp_path, workflow_text("r01_invert"), inputs))

    assert steps(again) == [(NodeState.CACHED, n) for n in ("1", "2", "3")]
    assert again.events[-1].nodes_done == 3
    assert again.result is not None and first.result is not None
    assert again.result.cached_nodes == ("1", "2", "3")
    assert again.result.files == first.result.files


async def test_tenants_sharing_a_comfyui_share_no_cached_result(
    engine: ComfyUIEngine, fake: RunningFake, tmp_path: Path
) -> None:
    inputs = {"shapes.png": SHAPES}
    text = workflow_text("r01_invert")
    a, b = tenant_scope("a"), tenant_scope("b")
    await run_engine(engine, replace(make_job(tmp_path / "a", text, inputs), cache_scope=a))
    other = await run_engine(engine, replace(make_job(tmp_path / "b", text, inputs), cache_scope=b))
    again = await run_engine(engine, replace(make_job(tmp_path / "c", text, inputs), cache_scope=b))

    assert other.result is not None and other.result.cached_nodes == ()
    assert again.result is not None and again.result.cached_nodes == ("1", "2", "3")
    # Each tenant's files are counted in a folder of its own, reported as ComfyUI would.
    [file] = other.result.files
    assert (file.filename, file.subfolder) == ("r01_00001_.png", "")
    saved = {
        p.relative_to(fake.fake.output_dir).parent.name for p in fake.fake.output_dir.rglob("*.png")
    }
    assert saved == {engine.output_folder(a), engine.output_folder(b)}


async def test_a_latent_output_keeps_its_subfolder(engine: ComfyUIEngine, tmp_path: Path) -> None:
    run = await run_engine(engine, make_job(tmp_path, workflow_text("r08_latent")))

    assert run.result is not None
    [file] = run.result.files
    assert (file.kind, file.subfolder, file.filename) == ("latents", "latents", "r08_00001_.latent")
    assert file.content_type == "application/octet-stream"
    assert file.data == reference_file("r08_latent", "node4_latents_0.latent")


async def test_a_batch_uploads_every_file_in_order(engine: ComfyUIEngine, tmp_path: Path) -> None:
    job = make_job(tmp_path, workflow_text("r09_batch"), {"shapes.png": SHAPES})

    run = await run_engine(engine, job)

    assert run.result is not None
    assert [f.filename for f in run.result.files] == ["r09_00001_.png", "r09_00002_.png"]
    assert [f.data for f in run.result.files] == [
        reference_file("r09_batch", "node5_images_0.png"),
        reference_file("r09_batch", "node5_images_1.png"),
    ]


async def test_a_node_that_raises_fails_with_comfyuis_error(
    engine: ComfyUIEngine, tmp_path: Path
) -> None:
    with pytest.raises(NodeRaised) as raised:
        await run_engine(engine, make_job(tmp_path, workflow_text("runtime_error")))

    err = raised.value
    assert (err.node_id, err.node_type, err.exception_type) == ("3", "LatentConcat", "RuntimeError")
    assert err.exception_message.startswith("Sizes of tensors must match except in dimension 3.")
    assert "torch.cat" in err.traceback
    failure = failure_of(err)
    assert failure.retryable is False and failure.metadata["node_type"] == "LatentConcat"


async def test_a_refused_workflow_is_rejected_with_field_violations(
    engine: ComfyUIEngine, fake: RunningFake, tmp_path: Path
) -> None:
    with pytest.raises(WorkflowRejected) as rejected:
        await run_engine(engine, make_job(tmp_path, workflow_text("invalid_wrong_value_type")))

    assert [(v.field, v.reason) for v in rejected.value.violations] == [
        ('workflow["4"].inputs.scale_by', "invalid_input_type")
    ]
    assert fake.fake.history == {}
    assert failure_of(rejected.value).reason == "WORKFLOW_INVALID"


async def test_malformed_json_is_rejected_before_comfyui_sees_it(
    engine: ComfyUIEngine, fake: RunningFake, tmp_path: Path
) -> None:
    with pytest.raises(WorkflowRejected):
        await run_engine(engine, make_job(tmp_path, "{not json"))

    assert fake.fake.submissions == []


async def test_a_partly_valid_workflow_runs_its_valid_output(
    engine: ComfyUIEngine, tmp_path: Path
) -> None:
    run = await run_engine(engine, make_job(tmp_path, workflow_text("partial_valid")))

    assert run.result is not None
    assert [(f.node_id, f.filename) for f in run.result.files] == [
        ("2", "bench_partial_00001_.png")
    ]
    assert {e.nodes_total for e in run.events} == {2}


async def test_a_slow_start_is_waited_for(start_fake: StartFake, start_engine: StartEngine) -> None:
    async with start_fake(unavailable_for_s=1.0) as fake:
        started = time.monotonic()
        async with start_engine(url=fake.url) as engine:
            assert time.monotonic() - started >= 1.0
            assert len(engine.node_types()) == len(object_info())


async def test_a_start_that_takes_too_long_is_unavailable(
    start_fake: StartFake, start_engine: StartEngine
) -> None:
    async with start_fake(unavailable_for_s=30.0) as fake:
        with pytest.raises(ComfyUIUnavailable, match=r"did not answer within 0\.5s"):
            async with start_engine(url=fake.url, startup_timeout_s=0.5):
                pass


async def test_a_silent_websocket_is_followed_through_history(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with (
        start_fake(silent_from_node="2", node_seconds=0.2) as fake,
        start_engine(url=fake.url, watchdog_s=0.3) as engine,
    ):
        job = make_job(tmp_path, workflow_text("r01_invert"), {"shapes.png": SHAPES})
        run = await run_engine(engine, job)

    assert run.result is not None
    assert run.result.files[0].data == reference_file("r01_invert", "node3_images_0.png")
    # Node 1 was heard; the rest was settled from /history.
    assert steps(run) == [
        (NodeState.RUNNING, "1"),
        (NodeState.DONE, "1"),
        (NodeState.DONE, "2"),
        (NodeState.DONE, "3"),
    ]
    assert run.events[-1].nodes_done == 3


async def test_a_dropped_websocket_is_followed_through_history(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with (
        start_fake(drop_sockets_at_node="2", node_seconds=0.1) as fake,
        start_engine(url=fake.url, watchdog_s=30.0) as engine,
    ):
        run = await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))

    assert run.result is not None
    assert [f.filename for f in run.result.files] == ["bench_a_00001_.png"]
    assert run.events[-1].nodes_done == 3


async def test_cancel_interrupts_the_prompt(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with (
        start_fake(node_seconds=30.0) as fake,
        start_engine(url=fake.url) as engine,
    ):
        cancel, run = CancelToken(), Run()
        task = asyncio.create_task(
            run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")), cancel, run)
        )

        async def node_1_runs() -> None:
            assert (NodeState.RUNNING, "1") in steps(run)

        await eventually(node_1_runs)
        started = time.monotonic()
        cancel.cancel()
        with pytest.raises(RunInterrupted):
            await task

        assert time.monotonic() - started < 5.0
        [entry] = fake.fake.history.values()
        assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
        assert fake.fake.interrupts == [{"prompt_id": entry["prompt"][1]}]


async def test_a_comfyui_that_went_away_is_a_retryable_failure(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with start_fake() as fake, start_engine(url=fake.url) as engine:
        pass  # the fake stops here; the engine stays configured for its URL

    with pytest.raises(ComfyUIUnavailable) as raised:
        await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))

    failure = failure_of(raised.value)
    assert isinstance(failure, Unavailable)
    assert failure.retryable and failure.reason == "COMFYUI_UNAVAILABLE"


async def test_cancel_of_a_prompt_still_queued_removes_it(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with (
        start_fake(node_seconds=30.0) as fake,
        start_engine(url=fake.url, watchdog_s=0.2) as engine,
    ):
        # Someone else's prompt holds ComfyUI, so the engine's waits in the queue.
        async with aiohttp.ClientSession() as http:
            body = {"prompt": json.loads(workflow_text("c_latent"))}
            async with http.post(f"{fake.url}/prompt", json=body) as response:
                assert response.status == 200
        cancel = CancelToken()
        task = asyncio.create_task(
            run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")), cancel)
        )

        async def queued_behind() -> None:
            assert len(fake.fake.pending) == 1

        await eventually(queued_behind)
        cancel.cancel()
        with pytest.raises(RunInterrupted):
            await task

        assert fake.fake.pending == [] and fake.fake.history == {}
        assert fake.fake.running is not None  # the other prompt runs on


async def test_a_prompt_that_ignores_the_interrupt_still_ends_the_run(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with (
        start_fake(node_seconds=30.0, ignore_interrupts=True) as fake,
        start_engine(url=fake.url, interrupt_timeout_s=0.3) as engine,
    ):
        cancel, run = CancelToken(), Run()
        task = asyncio.create_task(
            run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")), cancel, run)
        )

        async def node_1_runs() -> None:
            assert (NodeState.RUNNING, "1") in steps(run)

        await eventually(node_1_runs)
        cancel.cancel()
        with pytest.raises(RunInterrupted):
            await task
        assert len(fake.fake.interrupts) == 1


async def test_a_node_error_the_socket_never_told_is_read_from_history(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with (
        start_fake(silent_from_node="1") as fake,
        start_engine(url=fake.url, watchdog_s=0.2) as engine,
    ):
        run = Run()
        with pytest.raises(NodeRaised) as raised:
            await run_engine(engine, make_job(tmp_path, workflow_text("runtime_error")), run=run)

    assert (raised.value.node_id, raised.value.node_type) == ("3", "LatentConcat")
    # Node 2 ran first and was heard; from node 1 on only /history told, naming what ran.
    assert steps(run) == [(NodeState.RUNNING, "2"), (NodeState.DONE, "1"), (NodeState.DONE, "2")]


def engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD_NAME]


async def test_runs_share_the_engines_thread_from_start_to_close(
    fake: RunningFake, tmp_path: Path
) -> None:
    engine = ComfyUIEngine(ComfyUISettings(**(FAST | {"url": fake.url})), "cpu", tmp_path / "e")
    assert engine.loop_thread.thread is None
    await asyncio.to_thread(engine.start)
    thread = engine.loop_thread.thread
    assert thread is not None and thread.is_alive() and thread in engine_threads()
    heard_on: set[threading.Thread] = set()
    for _ in range(2):
        job = make_job(tmp_path, workflow_text("a_tiny"))
        await asyncio.to_thread(
            engine.run, job, lambda _: heard_on.add(threading.current_thread()), CancelToken()
        )

    # Every event of both runs came from the engine's thread, which close() ends.
    assert heard_on == {thread}
    await asyncio.to_thread(engine.close)
    assert not thread.is_alive() and engine.loop_thread.thread is None
    # Nor does an engine dropped without close() leave its thread behind.
    await asyncio.to_thread(engine.start)
    thread = engine.loop_thread.thread
    assert thread is not None
    del engine
    gc.collect()

    async def thread_ended() -> None:
        assert not thread.is_alive()

    await eventually(thread_ended)


async def test_runs_share_a_connection_and_a_restarted_comfyui_gets_a_new_one(
    tmp_path: Path,
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    engine = ComfyUIEngine(ComfyUISettings(**(FAST | {"url": url})), "cpu", tmp_path / "engine")
    try:
        async with running_fake(tmp_path / "first", port=port) as first:
            await asyncio.to_thread(engine.start)
            for _ in range(2):
                await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))
            # Each run opens one connection: its websocket takes over the kept-alive one
            # (a session per run would open two), and its requests ride on the next.
            assert len(first.fake.client_ports) == 2 + 2 * 4
            assert len(set(first.fake.client_ports)) == 1 + 2
        # ComfyUI restarted at the same address: the runs go on, on new connections.
        async with running_fake(tmp_path / "second", port=port) as second:
            for _ in range(2):
                run = await run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")))
                assert run.result is not None
                assert [f.filename for f in run.result.files] == ["bench_a_00001_.png"]
            assert len(set(second.fake.client_ports)) == 1 + 2
    finally:
        await asyncio.to_thread(engine.close)


async def test_closing_the_engine_mid_run_fails_the_run_as_unavailable(
    start_fake: StartFake, start_engine: StartEngine, tmp_path: Path
) -> None:
    async with (
        start_fake(node_seconds=30.0) as fake,
        start_engine(url=fake.url) as engine,
    ):
        run = Run()
        task = asyncio.create_task(
            run_engine(engine, make_job(tmp_path, workflow_text("a_tiny")), run=run)
        )

        async def node_1_runs() -> None:
            assert (NodeState.RUNNING, "1") in steps(run)

        await eventually(node_1_runs)
        await asyncio.to_thread(engine.close)
        with pytest.raises(ComfyUIUnavailable, match="closed during the run"):
            await task
