"""Serverless limits and warmup: when an executor leaves, and what a failed warmup says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from comfyfleet.common.config import ConfigError
from services.executor.config import Config
from services.executor.engine import Engine, build_engine
from services.executor.serverless import IdlePolls, ServerlessWatch, WarmupFailed, warm_up
from tests.support.paths import comfyui_ref


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_job_limit_stops_taking_work_at_the_last_start_and_exits_at_its_end() -> None:
    watch = ServerlessWatch(idle_exit_s=0, max_jobs=2)

    watch.observe(busy=True)
    watch.observe(busy=False)
    assert (watch.accepting, watch.reason_to_exit()) == (True, None)
    watch.observe(busy=True)
    assert (watch.accepting, watch.reason_to_exit()) == (False, None)
    watch.observe(busy=False)

    assert watch.reason_to_exit() == "ran its 2 jobs"


def test_idle_time_counts_from_the_end_of_the_last_attempt() -> None:
    clock = Clock()
    watch = ServerlessWatch(idle_exit_s=30, max_jobs=0, clock=clock)
    clock.now += 20
    watch.observe(busy=True)
    clock.now += 100
    assert watch.reason_to_exit() is None, "busy is never idle"
    watch.observe(busy=False)
    clock.now += 29

    assert watch.reason_to_exit() is None
    clock.now += 1
    assert watch.reason_to_exit() == "idle for 30s"


def test_without_limits_it_never_asks_to_exit() -> None:
    clock = Clock()
    watch = ServerlessWatch(idle_exit_s=0, max_jobs=0, clock=clock)
    for _ in range(5):
        watch.observe(busy=True)
        watch.observe(busy=False)
    clock.now += 1e6

    assert (watch.enabled, watch.accepting, watch.reason_to_exit()) == (False, True, None)


async def test_finished_wakes_when_the_last_job_ends() -> None:
    watch = ServerlessWatch(idle_exit_s=0, max_jobs=1)
    finished = asyncio.create_task(watch.finished())
    watch.observe(busy=True)
    await asyncio.sleep(0)
    assert not finished.done()

    watch.observe(busy=False)

    assert await asyncio.wait_for(finished, 5) == "ran its 1 jobs"


def test_idle_polls_must_come_in_a_row() -> None:
    polls = IdlePolls(3)

    assert [polls.poll(idle) for idle in (True, True, False, True, True)] == [False] * 5
    assert polls.poll(True) is True
    assert IdlePolls(0).poll(True) is False


def test_serverless_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_IDLE_EXIT_S", "45")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_MAX_JOBS", "10")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_IDLE_EXIT_POLLS", "3")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_WARMUP_WORKFLOW", "/etc/warmup.json")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_WARMUP_INPUTS_DIR", "/etc/warmup-inputs")

    cfg = Config.from_env()

    assert (cfg.idle_exit_s, cfg.max_jobs, cfg.idle_exit_polls) == (45.0, 10, 3)
    assert cfg.warmup_workflow == "/etc/warmup.json"
    assert cfg.warmup_inputs_dir == Path("/etc/warmup-inputs")


def test_negative_serverless_limits_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_MAX_JOBS", "-1")

    with pytest.raises(ConfigError, match="serverless limits"):
        Config.from_env()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return build_engine("native", "cpu", tmp_path_factory.mktemp("engine"))


def workflow(name: str) -> Path:
    return comfyui_ref() / "workflows" / f"{name}.json"


def test_warmup_runs_a_workflow_file_and_fills_the_node_cache(
    engine: Engine, tmp_path: Path
) -> None:
    seconds = warm_up(engine, str(workflow("r01_invert")), comfyui_ref() / "inputs", tmp_path)

    assert seconds > 0
    again = warm_up(engine, workflow("r01_invert").read_text(), comfyui_ref() / "inputs", tmp_path)
    assert again < seconds


def test_warmup_takes_inline_json_without_inputs(engine: Engine, tmp_path: Path) -> None:
    assert warm_up(engine, workflow("a_tiny").read_text(), None, tmp_path) > 0


def test_an_invalid_warmup_workflow_says_which_node_is_wrong(
    engine: Engine, tmp_path: Path
) -> None:
    expected = r"warmup workflow failed: .*invalid: workflow\[.2.\]: .*NoSuchNodeXYZ"
    with pytest.raises(WarmupFailed, match=expected):
        warm_up(engine, str(workflow("invalid_unknown_class")), None, tmp_path)


def test_a_warmup_node_that_raises_names_it(engine: Engine, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "shapes.png").write_bytes(b"this is not a png")

    with pytest.raises(WarmupFailed, match=r"failed: node 1 \(LoadImage\) raised"):
        warm_up(engine, str(workflow("r01_invert")), inputs, tmp_path)


def test_a_missing_warmup_file_is_a_clear_failure(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(WarmupFailed, match=r"cannot read the warmup workflow /nope\.json"):
        warm_up(engine, "/nope.json", None, tmp_path)
