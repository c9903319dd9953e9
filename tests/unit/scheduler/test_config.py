"""Scheduler settings from the environment, and the ones that cannot work together."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.common.config import ConfigError
from services.scheduler.config import Config, SchedulerSettings
from services.scheduler.providers.runpod import RunpodConfig


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


def test_breakers_and_prices_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_PROVIDER_BREAKER_MINIMUM_CALLS", "20")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_PROVIDER_BREAKER_OPEN_WAIT_S", "90")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_EXECUTOR_BREAKER_HALF_OPEN_PROBES", "2")
    table = tmp_path / "prices.json"
    table.write_text('{"ecs": {"usd_per_hour": {"*": 2.5}, "minimum_s": 60}}')
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_PRICES", f"@{table}")
    s = SchedulerSettings.from_env()
    assert (s.provider_breaker.minimum_calls, s.provider_breaker.open_wait_s) == (20, 90.0)
    assert s.provider_breaker.failure_rate == SchedulerSettings().provider_breaker.failure_rate
    assert s.executor_breaker.half_open_probes == 2
    assert s.prices.cost_usd("ecs", "A10G", 1) == pytest.approx(60 * 2.5 / 3600)
    # Providers the table leaves out keep their default prices.
    default = SchedulerSettings().prices
    assert s.prices.hourly("runpod", "H100") == default.hourly("runpod", "H100") > 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COMFYFLEET_SCHEDULER_PRICES", "@/nonexistent/prices.json"),
        ("COMFYFLEET_SCHEDULER_PRICES", "{"),
        ("COMFYFLEET_SCHEDULER_EXECUTOR_BREAKER_FAILURE_RATE", "2"),
    ],
)
def test_bad_breaker_or_price_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError):
        SchedulerSettings.from_env()


def test_a_runpod_endpoint_id_alone_points_at_runpods_api(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not RunpodConfig.from_env().enabled
    monkeypatch.setenv("COMFYFLEET_RUNPOD_ENDPOINT_ID", "abc123")
    monkeypatch.setenv("COMFYFLEET_RUNPOD_API_KEY", "rpa_secret")
    monkeypatch.setenv("COMFYFLEET_RUNPOD_MAX_IN_FLIGHT", "4")
    monkeypatch.setenv("COMFYFLEET_RUNPOD_GPU", "NVIDIA L40S")
    cfg = Config.from_env().runpod
    assert cfg.enabled and cfg.endpoint_url == "https://api.runpod.ai/v2/abc123"
    assert (cfg.executor_id, cfg.max_in_flight, cfg.api_key) == ("runpod-abc123", 4, "rpa_secret")
    registration = cfg.registration()
    assert (registration.provider, registration.address) == ("runpod", cfg.endpoint_url)
    assert registration.capacity.slots == 4
    assert registration.capacity.gpu.name == "NVIDIA L40S"
    monkeypatch.setenv("COMFYFLEET_RUNPOD_ENDPOINT_URL", "http://127.0.0.1:8000/")
    local = RunpodConfig.from_env()
    assert local.endpoint_url == "http://127.0.0.1:8000"


def test_each_scaled_provider_has_its_own_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_AUTOSCALE_UP_STEP", "4")
    monkeypatch.setenv("COMFYFLEET_SCHEDULER_AUTOSCALE_SCALE_TO_ZERO", "false")
    monkeypatch.setenv("COMFYFLEET_ECS_CLUSTER", "gpu")
    monkeypatch.setenv("COMFYFLEET_ECS_SERVICE", "executors")
    monkeypatch.setenv("COMFYFLEET_ECS_MAX_REPLICAS", "20")
    monkeypatch.setenv("COMFYFLEET_ECS_WARM_POOL", "1")
    monkeypatch.setenv("COMFYFLEET_RUNPOD_MAX_IN_FLIGHT", "2")
    cfg = Config.from_env()
    assert cfg.ecs.enabled and cfg.settings.autoscale_interval_s == 15
    policies = cfg.scale_policies()
    assert (policies["ecs"].max_replicas, policies["ecs"].warm_pool) == (20, 1)
    assert (policies["runpod"].max_replicas, policies["runpod"].warm_pool) == (2, 2)
    assert all(p.scale_up_step == 4 and not p.scale_to_zero for p in policies.values())
