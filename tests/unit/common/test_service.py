"""The service shell: one log format, configuration errors and refusals as one line with their
exit status, telemetry shut down, serve until a signal or the service's own end, then stop.
(Real processes get real signals in the services' ``test_process`` integration tests.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from comfyfleet.common import service as shell
from comfyfleet.common.config import ConfigError
from tests.support.paths import REPO_ROOT


@dataclass
class Fake:
    port: int = 4321
    events: list[str] = field(default_factory=list)


@dataclass
class FakeEndingByItself(Fake):
    async def finished(self) -> str:
        return "ran its 2 jobs"


@contextlib.asynccontextmanager
async def root(service: Fake) -> AsyncIterator[Fake]:
    service.events.append("started")
    try:
        yield service
    finally:
        service.events.append("stopped gracefully")


@pytest.fixture
def signal_after(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Stands in for SIGTERM: the shell's wait for a signal returns once this is set."""
    sent = asyncio.Event()
    monkeypatch.setattr(shell, "wait_for_shutdown_signal", sent.wait)
    return sent


async def test_it_serves_until_a_signal_then_leaves_the_root_gracefully(
    signal_after: asyncio.Event, caplog: pytest.LogCaptureFixture
) -> None:
    service = Fake()
    caplog.set_level(logging.INFO, logger=shell.__name__)
    serving = asyncio.create_task(shell.serve_until_stopped("models", root(service)))
    await asyncio.sleep(0.01)
    assert service.events == ["started"] and not serving.done()

    signal_after.set()

    assert await asyncio.wait_for(serving, 5) == shell.EXIT_OK
    assert service.events == ["started", "stopped gracefully"]
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "models serving on port 4321",
        "models stopping after a shutdown signal",
        "models stopped",
    ]


async def test_a_service_that_ends_by_itself_stops_without_a_signal(
    signal_after: asyncio.Event, caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeEndingByItself()
    caplog.set_level(logging.INFO, logger=shell.__name__)

    code = await asyncio.wait_for(shell.serve_until_stopped("executor", root(service)), 5)

    assert code == shell.EXIT_OK and service.events[-1] == "stopped gracefully"
    assert "executor stopping after ran its 2 jobs" in caplog.messages


class Telemetry:
    def __init__(self) -> None:
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Telemetry:
    made = Telemetry()
    monkeypatch.setattr(shell, "setup_telemetry", lambda *_: made)
    monkeypatch.setattr(shell, "configure_logging", lambda: None)
    return made


def exit_status(run: Any) -> int:
    with pytest.raises(SystemExit) as exited:
        run()
    return int(exited.value.code or 0)


class WarmupFailed(Exception):
    pass


def bad_config() -> None:
    raise ConfigError("COMFYFLEET_X='y' is not an integer")


def refuse(_: object) -> int:
    raise WarmupFailed("the warmup workflow failed")


def test_a_bad_setting_is_one_line_and_exit_status_2(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    code = exit_status(lambda: shell.run_process("gateway", bad_config, lambda _: 0))

    assert code == shell.EXIT_CONFIG
    assert caplog.messages == ["gateway not started: COMFYFLEET_X='y' is not an integer"]


def test_a_refusal_is_one_line_and_exit_status_1_with_telemetry_shut_down(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    code = exit_status(lambda: shell.run_process("executor", dict, refuse, (WarmupFailed,)))

    assert code == shell.EXIT_FAILED and telemetry.shut_down
    assert caplog.messages == ["executor not started: the warmup workflow failed"]
    assert all(r.exc_info is None for r in caplog.records)


def test_the_exit_status_is_mains_and_telemetry_is_shut_down(telemetry: Telemetry) -> None:
    assert exit_status(lambda: shell.run_process("worker", dict, lambda _: 0)) == 0
    assert telemetry.shut_down


def test_every_process_logs_in_one_format(monkeypatch: pytest.MonkeyPatch) -> None:
    configured: dict[str, Any] = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: configured.update(kw))
    monkeypatch.setenv("COMFYFLEET_LOG_LEVEL", "debug")

    shell.configure_logging()

    assert configured == {"level": "DEBUG", "format": shell.LOG_FORMAT}


def test_every_service_entry_point_is_the_shell() -> None:
    mains = sorted((REPO_ROOT / "services").glob("*/__main__.py"))
    entry_points = [*mains, REPO_ROOT / "services" / "executor" / "runpod_worker.py"]
    assert len(mains) == 5
    for path in entry_points:
        source = path.read_text()
        assert "run_service(" in source or "run_process(" in source, path
    # The image build's install step prints its own messages; everything else logs alike.
    configured = {
        str(p.relative_to(REPO_ROOT))
        for top in ("comfyfleet", "services")
        for p in (REPO_ROOT / top).rglob("*.py")
        if "logging.basicConfig(" in p.read_text()
    }
    assert configured == {
        "comfyfleet/common/service.py",
        "services/executor/comfyui/install.py",
    }
