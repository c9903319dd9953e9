"""The native engine's runner events become node updates with running counts."""

from __future__ import annotations

from comfyfleet.workflow.graph import parse_workflow
from comfyfleet.workflow.runner import (
    NodeFinished,
    NodeProgress,
    NodesCached,
    NodeStarted,
    NodeStatus,
)
from services.executor.engine import NodeEvent, NodeState, _Progress

WORKFLOW = parse_workflow(
    {
        "1": {"class_type": "EmptyImage", "inputs": {}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    }
)


def test_events_carry_states_counts_and_class_types() -> None:
    seen: list[NodeEvent] = []
    progress = _Progress(WORKFLOW, 3, seen.append)

    progress(NodesCached(("1",)))
    progress(NodeStarted("2", "ImageBlur"))
    progress(NodeProgress("2", 1.0, 4.0))
    progress(NodeFinished("2", "ImageBlur", NodeStatus.DONE, False, 0.25))
    progress(NodeStarted("3", "SaveImage"))
    progress(NodeFinished("3", "SaveImage", NodeStatus.DONE, False, 0.5, {"images": []}))

    assert seen == [
        NodeEvent(NodeState.CACHED, "1", "EmptyImage", 1, 3),
        NodeEvent(NodeState.RUNNING, "2", "ImageBlur", 1, 3),
        NodeEvent(NodeState.PROGRESS, "2", "ImageBlur", 1, 3, value=1, max=4),
        NodeEvent(NodeState.DONE, "2", "ImageBlur", 2, 3, seconds=0.25),
        NodeEvent(NodeState.RUNNING, "3", "SaveImage", 2, 3),
        NodeEvent(NodeState.DONE, "3", "SaveImage", 3, 3, seconds=0.5),
    ]


def test_cached_finishes_and_failures_are_not_counted_again() -> None:
    seen: list[NodeEvent] = []
    progress = _Progress(WORKFLOW, 3, seen.append)

    progress(NodesCached(("1", "2", "3")))
    progress(NodeFinished("3", "SaveImage", NodeStatus.DONE, True, 0.0, {"images": []}))
    progress(NodeFinished("2", "ImageBlur", NodeStatus.FAILED, False, 0.1))

    assert [(e.state, e.node_id, e.nodes_done) for e in seen] == [
        (NodeState.CACHED, "1", 1),
        (NodeState.CACHED, "2", 2),
        (NodeState.CACHED, "3", 3),
    ]
