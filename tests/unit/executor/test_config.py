"""The executor's configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.common.config import ConfigError
from services.executor.config import Config


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRPC_ADDR", "SCHEDULER_ADDR", "EXECUTOR_ID", "EXECUTOR_PROVIDER"):
        monkeypatch.delenv(f"COMFYFLEET_{name}", raising=False)

    cfg = Config.from_env()

    assert (cfg.grpc_addr, cfg.scheduler_addr) == ("127.0.0.1:50055", "127.0.0.1:50052")
    assert (cfg.executor_id, cfg.advertise_addr, cfg.provider) == ("", "", "local")
    assert cfg.register is True


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_GRPC_ADDR", "0.0.0.0:6000")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_ADVERTISE_ADDR", "gpu-7.internal:6000")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_ID", "gpu-7")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_PROVIDER", "ecs")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_DEVICE", "cpu")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_WORK_DIR", "/var/lib/executor")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_REGISTER", "false")

    cfg = Config.from_env()

    assert (cfg.grpc_addr, cfg.advertise_addr, cfg.executor_id) == (
        "0.0.0.0:6000",
        "gpu-7.internal:6000",
        "gpu-7",
    )
    assert (cfg.provider, cfg.device, cfg.work_dir) == ("ecs", "cpu", Path("/var/lib/executor"))
    assert cfg.register is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXECUTOR_DEVICE", "tpu"),
        ("EXECUTOR_PROVIDER", "gcp"),
        ("EXECUTOR_SHUTDOWN_GRACE_S", "0"),
        ("EXECUTOR_MODEL_CACHE_BYTES", "lots"),
        ("EXECUTOR_WEIGHTS_BUDGET_BYTES", "-1"),
        ("EXECUTOR_WEIGHTS_BUDGET_BYTES", "half"),
        ("EXECUTOR_WEIGHTS_BUDGET_FRACTION", "0"),
        ("EXECUTOR_WEIGHTS_BUDGET_FRACTION", "1.5"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"COMFYFLEET_{name}", value)

    with pytest.raises(ConfigError):
        Config.from_env()


def test_the_weights_budget_is_derived_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFYFLEET_EXECUTOR_WEIGHTS_BUDGET_BYTES", raising=False)
    monkeypatch.delenv("COMFYFLEET_EXECUTOR_WEIGHTS_BUDGET_FRACTION", raising=False)
    derived = Config.from_env()
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_WEIGHTS_BUDGET_BYTES", "0")
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_WEIGHTS_BUDGET_FRACTION", "0.8")
    nothing_kept = Config.from_env()

    assert (derived.weights_budget_bytes, derived.weights_budget_fraction) == (None, 0.5)
    assert (nothing_kept.weights_budget_bytes, nothing_kept.weights_budget_fraction) == (0, 0.8)
