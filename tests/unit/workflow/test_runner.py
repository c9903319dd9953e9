"""Scheduling, caching, progress and cancellation, with small stub nodes (no torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from comfyfleet.workflow.engine import WorkflowEngine
from comfyfleet.workflow.graph import parse_workflow
from comfyfleet.workflow.io import MemoryInputStore, MemoryOutputSink, OutputFile
from comfyfleet.workflow.runner import (
    CancelToken,
    ExecutionEvent,
    NodeContext,
    NodeDefinition,
    NodeFinished,
    NodeOutput,
    NodeProgress,
    NodeRegistry,
    NodesCached,
    NodeStarted,
    Pending,
    Runner,
    RunStatus,
)
from comfyfleet.workflow.schedule import DependencyCycleError, GraphError, execution_order
from comfyfleet.workflow.specs import InputSpec, NodeSpec, OutputSpec, Section


class Stubs:
    """A registry of stub nodes that record every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.hook: Callable[[NodeContext], None] | None = None
        defs = [
            self._define("Num", [InputSpec("value", "INT", default=0)], ["INT"], self._num),
            self._define("Add", [InputSpec("a", "INT"), InputSpec("b", "INT")], ["INT"], self._add),
            self._define("Fail", [InputSpec("a", "INT")], ["INT"], self._fail),
            self._define(
                "Pick",
                [
                    InputSpec("which", "BOOLEAN"),
                    InputSpec("a", "INT", lazy=True),
                    InputSpec("b", "INT", lazy=True),
                ],
                ["INT"],
                self._pick,
            ),
            self._define("Split", [InputSpec("a", "INT")], ["INT"], self._split, is_list=True),
            self._define("Out", [InputSpec("a", "INT")], [], self._out, output=True),
            self._define(
                "Total", [InputSpec("a", "INT")], ["INT"], self._total, input_is_list=True
            ),
        ]
        self.registry = NodeRegistry(defs)

    def _define(
        self,
        name: str,
        inputs: list[InputSpec],
        outputs: list[str],
        fn: Callable[..., Any],
        *,
        output: bool = False,
        is_list: bool = False,
        input_is_list: bool = False,
    ) -> NodeDefinition:
        spec = NodeSpec(
            name,
            "test",
            tuple(inputs),
            tuple(OutputSpec(t, t, is_list=is_list) for t in outputs),
            output_node=output,
        )

        def wrapped(ctx: NodeContext, **kw: Any) -> Any:
            self.calls.append(ctx.node_id)
            if self.hook is not None:
                self.hook(ctx)
            return fn(ctx, **kw)

        return NodeDefinition(spec, wrapped, input_is_list=input_is_list)

    @staticmethod
    def _num(ctx: NodeContext, value: int) -> tuple[int]:
        ctx.progress(1, 1)
        return (value,)

    @staticmethod
    def _add(ctx: NodeContext, a: int, b: int) -> tuple[int]:
        return (a + b,)

    @staticmethod
    def _fail(ctx: NodeContext, a: int) -> tuple[int]:
        raise ValueError(f"bad value {a}")

    @staticmethod
    def _pick(ctx: NodeContext, which: bool, a: Any = None, b: Any = None) -> Any:
        wanted = "a" if which else "b"
        value = a if which else b
        if value is None:
            return Pending((wanted,))
        return (value,)

    @staticmethod
    def _split(ctx: NodeContext, a: int) -> tuple[list[int]]:
        return ([a, a * 10, a * 100],)

    @staticmethod
    def _total(ctx: NodeContext, a: list[int]) -> tuple[int]:
        return (sum(a),)

    @staticmethod
    def _out(ctx: NodeContext, a: int) -> NodeOutput:
        data = str(a).encode()
        file = OutputFile(ctx.node_id, f"out_{ctx.node_id}.txt", "", "output", data, "text/plain")
        ctx.outputs.write(file)
        return NodeOutput((), {"values": [a], "files": [file.ref()]})


def _node(cls: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": cls, "inputs": inputs}


CHAIN = {
    "1": _node("Num", value=2),
    "2": _node("Num", value=3),
    "3": _node("Add", a=["1", 0], b=["2", 0]),
    "4": _node("Out", a=["3", 0]),
    "9": _node("Num", value=99),  # not needed by any output
}


@pytest.fixture
def stubs() -> Stubs:
    return Stubs()


def _run(engine: WorkflowEngine, wf: dict[str, Any], **kw: Any) -> Any:
    sink = MemoryOutputSink()
    result = engine.run(wf, MemoryInputStore(), sink, **kw)
    return result, sink


def test_runs_only_what_outputs_need_in_dependency_order(stubs: Stubs) -> None:
    result, sink = _run(WorkflowEngine(stubs.registry), CHAIN)
    assert result.status is RunStatus.SUCCEEDED
    assert "9" not in stubs.calls
    assert stubs.calls.index("3") > max(stubs.calls.index("1"), stubs.calls.index("2"))
    assert stubs.calls[-1] == "4"
    assert result.ui["4"]["values"] == [5]
    assert [o.filename for o in result.outputs] == ["out_4.txt"]
    assert sink.files[0].data == b"5"
    assert {n.node_id for n in result.nodes} == {"1", "2", "3", "4"}
    assert all(n.seconds >= 0 and not n.cached for n in result.nodes)


def test_identical_resubmission_is_fully_cached(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN)
    stubs.calls.clear()
    events: list[ExecutionEvent] = []
    result, sink = _run(engine, CHAIN, on_event=events.append)
    assert stubs.calls == []
    assert sorted(result.cached_nodes) == ["1", "2", "3", "4"]
    assert events[0] == NodesCached(("1", "2", "3", "4"))
    assert result.ui["4"]["values"] == [5]
    assert result.outputs[0].cached
    assert sink.files == []


def test_changed_literal_reruns_only_downstream(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN)
    stubs.calls.clear()
    changed = dict(CHAIN, **{"2": _node("Num", value=4)})
    result, _ = _run(engine, changed)
    assert sorted(stubs.calls) == ["2", "3", "4"]
    assert result.cached_nodes == ("1",)
    assert result.ui["4"]["values"] == [6]


def test_cache_ignores_node_ids(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN)
    stubs.calls.clear()
    renamed = {
        "a": _node("Num", value=2),
        "b": _node("Num", value=3),
        "c": _node("Add", a=["a", 0], b=["b", 0]),
        "d": _node("Out", a=["c", 0]),
    }
    result, _ = _run(engine, renamed)
    # The output node's files would embed the other prompt (other node ids): it runs again.
    assert stubs.calls == ["d"]
    assert sorted(result.cached_nodes) == ["a", "b", "c"]


def test_runs_of_another_scope_reuse_nothing(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN, cache_scope="tenant:a")
    stubs.calls.clear()
    result, sink = _run(engine, CHAIN, cache_scope="tenant:b")
    assert sorted(stubs.calls) == ["1", "2", "3", "4"]
    assert result.cached_nodes == ()
    assert [f.path for f in sink.files] == ["out_4.txt"]


def test_a_scope_reuses_its_own_outputs(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN, cache_scope="tenant:a")
    stubs.calls.clear()
    result, _ = _run(engine, CHAIN, cache_scope="tenant:a")
    assert stubs.calls == []
    assert sorted(result.cached_nodes) == ["1", "2", "3", "4"]


def test_a_scope_switch_drops_the_other_scopes_entries(stubs: Stubs) -> None:
    # One cache holds the last run's entries, as ComfyUI's does: a->b->a runs a afresh.
    engine = WorkflowEngine(stubs.registry)
    for scope in ("tenant:a", "tenant:b"):
        _run(engine, CHAIN, cache_scope=scope)
    stubs.calls.clear()
    result, _ = _run(engine, CHAIN, cache_scope="tenant:a")
    assert sorted(stubs.calls) == ["1", "2", "3", "4"] and result.cached_nodes == ()


def test_shared_runs_serve_every_scope_but_not_its_output_nodes(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN)  # SHARED_SCOPE: an operator's warmup
    stubs.calls.clear()
    result, sink = _run(engine, CHAIN, cache_scope="tenant:a")
    assert stubs.calls == ["4"]
    assert sorted(result.cached_nodes) == ["1", "2", "3"]
    assert [f.path for f in sink.files] == ["out_4.txt"]
    # The shared entries it reused stay for the next scope; its own entries serve only it.
    stubs.calls.clear()
    other, _ = _run(engine, CHAIN, cache_scope="tenant:b")
    assert stubs.calls == ["4"] and sorted(other.cached_nodes) == ["1", "2", "3"]


def test_a_scoped_run_fills_nothing_the_shared_scope_reuses(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN, cache_scope="tenant:a")
    stubs.calls.clear()
    result, _ = _run(engine, CHAIN)
    assert sorted(stubs.calls) == ["1", "2", "3", "4"] and result.cached_nodes == ()


def test_an_output_node_reruns_when_the_prompt_it_embeds_changed(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN, cache_scope="tenant:a")
    stubs.calls.clear()
    # Node 9 feeds no output, but the files of node 4 embed the whole prompt.
    changed = dict(CHAIN, **{"9": _node("Num", value=100)})
    result, sink = _run(engine, changed, cache_scope="tenant:a")
    assert stubs.calls == ["4"]
    assert sorted(result.cached_nodes) == ["1", "2", "3"]
    assert len(sink.files) == 1
    titled = {**CHAIN, "9": {**CHAIN["9"], "_meta": {"title": "private"}}}
    stubs.calls.clear()
    _run(engine, titled, cache_scope="tenant:a")
    assert stubs.calls == ["4"]
    stubs.calls.clear()
    _run(engine, CHAIN, cache_scope="tenant:a", extra_pnginfo={"workflow": {"nodes": []}})
    assert stubs.calls == ["4"]


def test_use_cache_false_runs_everything(stubs: Stubs) -> None:
    engine = WorkflowEngine(stubs.registry)
    _run(engine, CHAIN)
    stubs.calls.clear()
    _run(engine, CHAIN, use_cache=False)
    assert sorted(stubs.calls) == ["1", "2", "3", "4"]


def test_events_report_start_progress_and_finish(stubs: Stubs) -> None:
    events: list[ExecutionEvent] = []
    _run(WorkflowEngine(stubs.registry), CHAIN, on_event=events.append)
    assert events[0] == NodesCached(())
    started = [e.node_id for e in events if isinstance(e, NodeStarted)]
    finished = [e for e in events if isinstance(e, NodeFinished)]
    assert started == [e.node_id for e in finished]
    assert NodeProgress("1", 1, 1) in events
    assert finished[-1].ui == {
        "values": [5],
        "files": [{"filename": "out_4.txt", "subfolder": "", "type": "output"}],
    }


def test_failure_reports_node_and_exception(stubs: Stubs) -> None:
    wf = {"1": _node("Num", value=7), "2": _node("Fail", a=["1", 0]), "3": _node("Out", a=["2", 0])}
    engine = WorkflowEngine(stubs.registry)
    result, _ = _run(engine, wf)
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.node_id, result.error.class_type) == ("2", "Fail")
    assert result.error.exception_type == "ValueError"
    assert result.error.exception_message == "bad value 7"
    assert result.error.executed == ("1",)
    assert result.error.traceback
    stubs.calls.clear()
    again, _ = _run(engine, wf)
    assert again.cached_nodes == ("1",) and stubs.calls == ["2"]


def test_cancel_between_nodes(stubs: Stubs) -> None:
    token = CancelToken()

    def cancel_after_first(ctx: NodeContext) -> None:
        token.cancel()

    stubs.hook = cancel_after_first
    result, _ = _run(WorkflowEngine(stubs.registry), CHAIN, cancel=token)
    assert result.status is RunStatus.CANCELLED
    assert len(stubs.calls) == 1


def test_cancel_polled_inside_a_node(stubs: Stubs) -> None:
    token = CancelToken()

    def long_loop(ctx: NodeContext) -> None:
        token.cancel()
        ctx.check_cancelled()

    stubs.hook = long_loop
    result, _ = _run(WorkflowEngine(stubs.registry), CHAIN, cancel=token)
    assert result.status is RunStatus.CANCELLED
    assert result.error is None


def test_lazy_inputs_evaluate_only_the_branch_asked_for(stubs: Stubs) -> None:
    wf = {
        "1": _node("Num", value=1),
        "2": _node("Num", value=2),
        "3": _node("Pick", which=False, a=["1", 0], b=["2", 0]),
        "4": _node("Out", a=["3", 0]),
    }
    result, _ = _run(WorkflowEngine(stubs.registry), wf)
    assert result.status is RunStatus.SUCCEEDED
    assert result.ui["4"]["values"] == [2]
    assert "1" not in stubs.calls
    assert stubs.calls.count("3") == 2


def test_list_outputs_map_downstream_nodes(stubs: Stubs) -> None:
    wf = {
        "1": _node("Num", value=2),
        "2": _node("Split", a=["1", 0]),
        "3": _node("Add", a=["2", 0], b=["1", 0]),
        "4": _node("Out", a=["3", 0]),
        "5": _node("Total", a=["2", 0]),
        "6": _node("Out", a=["5", 0]),
    }
    result, _ = _run(WorkflowEngine(stubs.registry), wf)
    assert result.ui["4"]["values"] == [4, 22, 202]
    assert result.ui["6"]["values"] == [222]
    assert stubs.calls.count("3") == 3


def test_cycle_detection_names_a_node() -> None:
    wf = parse_workflow(
        {
            "1": _node("Add", a=["2", 0], b=["3", 0]),
            "2": _node("Add", a=["1", 0], b=["3", 0]),
            "3": _node("Num", value=1),
        }
    )
    with pytest.raises(DependencyCycleError) as info:
        execution_order(wf, ["1"])
    assert info.value.node_id in {"1", "2"}
    assert set(info.value.cycle) == {"1", "2"}
    assert "cycle" in str(info.value)


def test_runner_reports_cycles_and_missing_nodes(stubs: Stubs) -> None:
    runner = Runner(stubs.registry)
    cyclic = parse_workflow(
        {"1": _node("Out", a=["2", 0]), "2": _node("Add", a=["2", 0], b=["2", 0])}
    )
    with pytest.raises(DependencyCycleError):
        runner.run(cyclic, inputs=MemoryInputStore(), outputs=MemoryOutputSink())
    missing = parse_workflow({"1": _node("Out", a=["7", 0])})
    with pytest.raises(GraphError):
        runner.run(missing, inputs=MemoryInputStore(), outputs=MemoryOutputSink())


def test_engine_turns_invalid_workflows_into_results(stubs: Stubs) -> None:
    result, _ = _run(WorkflowEngine(stubs.registry), {"1": _node("Out", a="x")})
    assert result.status is RunStatus.INVALID
    assert result.validation.error.type == "prompt_outputs_failed_validation"


def test_execution_order_is_deterministic() -> None:
    wf = parse_workflow(CHAIN)
    assert execution_order(wf, ["4"]) == ["1", "2", "3", "4"]


def test_hidden_inputs_are_not_validated(stubs: Stubs) -> None:
    spec = NodeSpec("H", "t", (InputSpec("prompt", "PROMPT", section=Section.HIDDEN),))
    assert list(spec.visible_inputs()) == []
