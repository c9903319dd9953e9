"""ComfyUI's messages, history entries and rejections, as captured, mapped to engine terms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.executor.comfyui.protocol import (
    OutputRef,
    RunTracker,
    nodes_to_run,
    outcome_of,
    rejection,
)
from services.executor.engine import NodeEvent, NodeState
from tests.support.paths import comfyui_ref

RUNNING, PROGRESS, DONE, CACHED = (
    NodeState.RUNNING,
    NodeState.PROGRESS,
    NodeState.DONE,
    NodeState.CACHED,
)
OUTPUT_CLASSES = frozenset({"SaveImage", "SaveLatent", "PreviewImage"})


def trace(name: str) -> dict[str, Any]:
    return json.loads((comfyui_ref() / "ws_trace.json").read_text())[name]


def invalid(name: str) -> dict[str, Any]:
    return json.loads((comfyui_ref() / "invalid_responses.json").read_text())[name]


def workflow(name: str) -> dict[str, Any]:
    return json.loads((comfyui_ref() / "workflows" / f"{name}.json").read_text())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def replay(name: str, upto: int | None = None) -> tuple[RunTracker, list[NodeEvent]]:
    run = trace(name)
    events: list[NodeEvent] = []
    expected = nodes_to_run(run["prompt"], OUTPUT_CLASSES, {})
    tracker = RunTracker(run["prompt_id"], run["prompt"], expected, events.append, Clock())
    for item in run["messages"][:upto]:
        tracker.feed(item["msg"])
    return tracker, events


def steps(events: list[NodeEvent]) -> list[tuple[NodeState, str, int]]:
    return [(e.state, e.node_id, e.nodes_done) for e in events]


def test_a_fresh_run_reports_each_node_running_then_done() -> None:
    tracker, events = replay("b_fresh")

    assert steps(events) == [
        (RUNNING, "1", 0),
        (DONE, "1", 1),
        (RUNNING, "2", 1),
        (DONE, "2", 2),
        (RUNNING, "3", 2),
        (DONE, "3", 3),
        (RUNNING, "4", 3),
        (DONE, "4", 4),
        (RUNNING, "5", 4),
        (DONE, "5", 5),
    ]
    assert tracker.finished
    assert {e.nodes_total for e in events} == {5}
    classes = {e.node_id: e.class_type for e in events}
    assert classes == {
        "1": "EmptyImage",
        "2": "ImageBlur",
        "3": "ImageScaleBy",
        "4": "ImageInvert",
        "5": "SaveImage",
    }
    assert all(e.seconds == pytest.approx(0.5) for e in events if e.state == DONE)


def test_the_run_is_not_finished_before_executing_null() -> None:
    tracker, events = replay("b_fresh", upto=-1)

    assert not tracker.finished
    # execution_success closes the last node even before the end.
    assert steps(events)[-1] == (DONE, "5", 5)


def test_a_fully_cached_run_reports_every_node_cached() -> None:
    tracker, events = replay("b_identical_resubmit_fully_cached")

    assert steps(events) == [(CACHED, n, i) for i, n in enumerate("12345", start=1)]
    assert tracker.finished


def test_a_runtime_error_leaves_the_failing_node_running() -> None:
    tracker, events = replay("runtime_error_LatentConcat_shape_mismatch")

    assert steps(events) == [
        (RUNNING, "2", 0),
        (DONE, "2", 1),
        (RUNNING, "1", 1),
        (DONE, "1", 2),
        (RUNNING, "3", 2),
    ]
    assert tracker.finished


def test_messages_of_other_prompts_are_ignored() -> None:
    run = trace("b_fresh")
    events: list[NodeEvent] = []
    tracker = RunTracker("another-prompt", run["prompt"], ["1"], events.append)

    for item in run["messages"]:
        tracker.feed(item["msg"])

    assert events == [] and not tracker.finished


def test_progress_messages_become_progress_events() -> None:
    events: list[NodeEvent] = []
    prompt = {"1": {"class_type": "KSampler", "inputs": {}}}
    tracker = RunTracker("p", prompt, ["1"], events.append)

    tracker.feed({"type": "executing", "data": {"node": "1", "prompt_id": "p"}})
    tracker.feed(
        {"type": "progress", "data": {"value": 3, "max": 20, "prompt_id": "p", "node": "1"}}
    )
    tracker.feed({"type": "progress", "data": {"value": 4, "max": 20, "prompt_id": "p"}})

    assert [(e.state, e.value, e.max) for e in events] == [
        (RUNNING, 0, 0),
        (PROGRESS, 3, 20),
        (PROGRESS, 4, 20),
    ]
    assert all(e.class_type == "KSampler" for e in events)


def test_unknown_nodes_and_other_messages_are_ignored() -> None:
    events: list[NodeEvent] = []
    tracker = RunTracker(
        "p", {"1": {"class_type": "SaveImage", "inputs": {}}}, ["1"], events.append
    )

    tracker.feed({"type": "executing", "data": {"node": "1.0.7", "prompt_id": "p"}})
    tracker.feed({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}})
    tracker.feed({"type": "crystools.monitor", "data": None})

    assert events == []


def test_settle_completes_the_counts_after_a_silent_socket() -> None:
    # The socket fell silent after node 2 started; /history says the prompt succeeded.
    tracker, events = replay("b_fresh", upto=9)
    assert steps(events)[-1] == (RUNNING, "2", 1)

    tracker.settle(outcome_of(next(iter(trace("b_fresh")["history"].values()))))

    assert steps(events)[-4:] == [(DONE, "2", 2), (DONE, "3", 3), (DONE, "4", 4), (DONE, "5", 5)]


def test_settle_reports_cached_nodes_the_socket_missed() -> None:
    tracker, events = replay("b_identical_resubmit_fully_cached", upto=2)

    tracker.settle(
        outcome_of(next(iter(trace("b_identical_resubmit_fully_cached")["history"].values())))
    )

    assert steps(events) == [(CACHED, n, i) for i, n in enumerate("12345", start=1)]


def test_settle_after_a_failure_reports_nothing_more() -> None:
    tracker, events = replay("runtime_error_LatentConcat_shape_mismatch")
    before = list(events)

    tracker.settle(
        outcome_of(
            next(iter(trace("runtime_error_LatentConcat_shape_mismatch")["history"].values()))
        )
    )

    assert events == before


def test_a_successful_history_entry_lists_its_files_in_order() -> None:
    outcome = outcome_of(next(iter(trace("b_fresh")["history"].values())))

    assert outcome.status == "success"
    assert outcome.cached_nodes == ()
    assert outcome.outputs == tuple(
        OutputRef("5", "images", f"bench_b_0102{i}_.png", "", "output") for i in (5, 6, 7, 8)
    )


def test_a_latent_output_keeps_its_subfolder_and_kind() -> None:
    outcome = outcome_of(next(iter(trace("c_latent_SaveLatent")["history"].values())))

    assert outcome.outputs == (
        OutputRef("4", "latents", "bench_c_00005_.latent", "latents", "output"),
    )


def test_a_failed_history_entry_carries_the_execution_error() -> None:
    outcome = outcome_of(
        next(iter(trace("runtime_error_LatentConcat_shape_mismatch")["history"].values()))
    )

    assert outcome.status == "error"
    assert (outcome.error["node_id"], outcome.error["node_type"]) == ("3", "LatentConcat")
    assert outcome.error["exception_type"] == "RuntimeError"
    assert outcome.outputs == ()


def test_an_interrupted_history_entry_says_so() -> None:
    entry = {
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                ["execution_start", {"prompt_id": "p"}],
                ["execution_interrupted", {"prompt_id": "p", "node_id": "2", "node_type": "X"}],
            ],
        },
    }

    assert outcome_of(entry).status == "interrupted"


def test_outputs_that_are_not_files_are_skipped() -> None:
    entry = {
        "outputs": {
            "7": {"text": ["hello"], "animated": [False], "images": [{"filename": "a.png"}]}
        },
        "status": {"status_str": "success", "messages": []},
    }

    assert outcome_of(entry).outputs == (OutputRef("7", "images", "a.png", "", "output"),)


def test_a_rejection_names_each_bad_input() -> None:
    error = rejection(invalid("invalid_multi_validation.json")["body"])

    assert [(v.field, v.reason) for v in error.violations] == [
        ('workflow["2"].inputs.images', "exception_during_inner_validation"),
        ('workflow["1"].inputs.width', "value_smaller_than_min"),
        ('workflow["4"].inputs.scale_by', "invalid_input_type"),
        ('workflow["4"].inputs.upscale_method', "value_not_in_list"),
        ('workflow["5"].inputs.filename_prefix', "required_input_missing"),
    ]
    assert error.violations[1].description == "Value 0 smaller than min of 1: width"
    assert error.message.startswith('the workflow is invalid: workflow["2"].inputs.images: ')
    # ComfyUI's answer goes along, for REST clients' node_errors.
    assert error.comfy_body == invalid("invalid_multi_validation.json")["body"]


def test_a_prompt_level_rejection_names_its_node() -> None:
    error = rejection(invalid("invalid_unknown_class.json")["body"])

    assert [(v.field, v.description, v.reason) for v in error.violations] == [
        (
            'workflow["2"]',
            "Cannot execute because node NoSuchNodeXYZ does not exist.",
            "invalid_prompt",
        )
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("invalid_no_outputs.json", "prompt_no_outputs"), ("<no 'prompt' key>", "no_prompt")],
)
def test_a_rejection_of_the_whole_workflow(name: str, reason: str) -> None:
    error = rejection(invalid(name)["body"])

    assert [(v.field, v.reason) for v in error.violations] == [("workflow", reason)]


def test_a_rejection_with_an_unreadable_body_still_explains() -> None:
    error = rejection("500 Internal Server Error")

    assert [v.field for v in error.violations] == ["workflow"]


def test_nodes_to_run_follow_the_valid_outputs() -> None:
    partial = invalid("partial_valid.json")["body"]["node_errors"]

    assert nodes_to_run(workflow("partial_valid"), OUTPUT_CLASSES, partial) == ("1", "2")
    assert nodes_to_run(workflow("b_medium"), OUTPUT_CLASSES, {}) == ("1", "2", "3", "4", "5")


def test_nodes_no_output_needs_are_not_counted() -> None:
    prompt = workflow("a_tiny") | {
        "9": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    }

    assert nodes_to_run(prompt, OUTPUT_CLASSES, {}) == ("1", "2", "3")


def test_settle_after_a_silent_failure_reports_the_nodes_that_ran() -> None:
    name = "runtime_error_LatentConcat_shape_mismatch"
    tracker, events = replay(name, upto=6)  # heard up to node 2 starting
    assert steps(events) == [(RUNNING, "2", 0)]

    tracker.settle(outcome_of(next(iter(trace(name)["history"].values()))))

    assert steps(events) == [(RUNNING, "2", 0), (DONE, "1", 1), (DONE, "2", 2)]
