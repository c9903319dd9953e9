"""Graphs of ten thousand nodes validate without recursion, in bounded time.

Real workflows reach several hundred nodes, and the platform takes up to
:data:`~comfyfleet.workflow.limits.WORKFLOW_LIMITS` ``max_nodes``; validating one must not
depend on Python's recursion limit or grow quadratically with the number of outputs.
"""

from __future__ import annotations

import time
from typing import Any

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.validate import ErrorType, validate_workflow

N = 10_000
# Well above what these take (0.1 to 0.5 s here), so that a busy CI machine does not flake.
BOUND_S = 2.0


def _empty(**overrides: Any) -> dict[str, Any]:
    inputs = {"width": 8, "height": 8, "batch_size": 1, "color": 0} | overrides
    return {"class_type": "EmptyImage", "inputs": inputs}


def _save(upstream: str) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": [upstream, 0], "filename_prefix": "x"}}


def chain(n: int, **root: Any) -> dict[str, Any]:
    """EmptyImage -> ImageInvert x (n - 2) -> SaveImage: every node links to the one before."""
    nodes = {"1": _empty(**root)}
    for i in range(2, n):
        nodes[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    nodes[str(n)] = _save(str(n - 1))
    return nodes


def wide(n: int, **root: Any) -> dict[str, Any]:
    """One EmptyImage that n - 1 SaveImage outputs all link to."""
    return {"1": _empty(**root)} | {str(i): _save("1") for i in range(2, n + 1)}


def timed(workflow: dict[str, Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = validate_workflow(workflow, NATIVE_CATALOG)
    return result, time.perf_counter() - started


def test_a_chain_of_ten_thousand_nodes_validates() -> None:
    result, took = timed(chain(N))
    assert result.ok and result.outputs == (str(N),)
    assert took < BOUND_S, took


def test_an_error_at_the_far_end_of_a_long_chain_is_reported_at_its_node() -> None:
    result, took = timed(chain(N, width=-1))
    assert not result.ok
    assert [(n.node_id, n.dependent_outputs) for n in result.node_errors] == [("1", (str(N),))]
    assert result.node_errors[0].errors[0].type == ErrorType.VALUE_SMALLER_THAN_MIN
    assert took < BOUND_S, took


def test_a_long_cycle_is_named_without_recursion() -> None:
    nodes = chain(N)
    nodes["1"] = {"class_type": "ImageInvert", "inputs": {"image": [str(N - 1), 0]}}
    result, took = timed(nodes)
    assert not result.ok
    cycle = [e for n in result.node_errors for e in n.errors if e.type == "dependency_cycle"]
    assert [(e.node_id, e.extra_info["linked_node"]) for e in cycle] == [("1", [str(N - 1), 0])]
    assert took < BOUND_S, took


def test_a_link_to_a_missing_node_deep_in_a_chain_is_reported() -> None:
    nodes = chain(N)
    nodes["2"]["inputs"]["image"] = ["nowhere", 0]
    result, took = timed(nodes)
    assert not result.ok
    issue = next(e for n in result.node_errors for e in n.errors)
    assert issue.type == ErrorType.EXCEPTION_DURING_INNER_VALIDATION
    assert issue.field == 'workflow["2"].inputs.image'
    assert took < BOUND_S, took


def test_ten_thousand_failing_outputs_take_bounded_time() -> None:
    # Every output fails through the shared node: its dependent_outputs lists them all,
    # as ComfyUI's does, without walking every validated node once per output.
    result, took = timed(wide(N, width=-1))
    assert not result.ok
    assert [n.node_id for n in result.node_errors] == ["1"]
    assert len(result.node_errors[0].dependent_outputs) == N - 1
    assert took < BOUND_S, took


def test_thousands_of_failing_outputs_each_with_its_own_failing_node_take_bounded_time() -> None:
    # ComfyUI lists every later failing output under each failing node: five thousand lists
    # of up to five thousand outputs, which must not be built one append at a time.
    nodes: dict[str, Any] = {}
    for i in range(N // 2):
        nodes[f"e{i:05}"] = _empty(width=-1)
        nodes[f"s{i:05}"] = _save(f"e{i:05}")
    result, took = timed(nodes)
    assert not result.ok and len(result.node_errors) == N // 2
    first, last = result.node_errors[0], result.node_errors[-1]
    assert (first.node_id, first.dependent_count) == ("e00000", N // 2)
    assert first.dependent_outputs[:2] == ("s00000", "s00001")
    assert (last.node_id, last.dependent_outputs) == (f"e{N // 2 - 1:05}", (f"s{N // 2 - 1:05}",))
    assert took < BOUND_S, took
