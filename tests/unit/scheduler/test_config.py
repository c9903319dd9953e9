"""Scheduler settings from the environment, and the ones that cannot work together."""

from __future__ import annotations

import pytest

from comfyfleet.common.config import ConfigError
from services.scheduler.config import Config, SchedulerSettings


def test_from_env_reads_scheduler_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_GRPC_ADDR", "127.0.0.1:0")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_OUTPUT_SLOTS", "8")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_LEASE_S", "12.5")
    cfg = Config.from_env()
    assert cfg.grpc_addr == "127.0.0.1:0"
    assert cfg.settings.max_attempts == 5
    assert cfg.settings.output_slots == 8
    assert cfg.settings.lease_s == 12.5
    assert cfg.schema == "scheduler"


def test_defaults() -> None:
    s = SchedulerSettings()
    assert (s.max_attempts, s.output_slots) == (3, 32)
    assert s.executor_lapse_s == 3 * s.heartbeat_interval_s


@pytest.mark.parametrize(
    "changes",
    [
        {"lease_s": 5.0, "heartbeat_interval_s": 5.0},
        {"max_attempts": 0},
        {"max_attempts": 11},
        {"output_slots": 0},
        {"tenant_concurrency": 0},
        {"backoff_base_s": 0.0},
    ],
)
def test_settings_that_cannot_work_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SchedulerSettings(**changes)  # type: ignore[arg-type]
