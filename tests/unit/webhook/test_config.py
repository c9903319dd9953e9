"""Settings from the environment: durations, schedules, networks and their checks."""

from __future__ import annotations

import ipaddress

import pytest

from comfyfleet.common.addresses import parse_networks
from comfyfleet.common.config import ConfigError, parse_duration
from services.webhook.config import Config, DeliverySettings, parse_schedule


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5", 5.0), ("5s", 5.0), ("250ms", 0.25), ("5m", 300.0), ("2h", 7200.0), ("1.5d", 129600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "-1s", "s"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(bad)


def test_schedules_and_networks() -> None:
    assert parse_schedule("50ms, 0.1s,1") == (0.05, 0.1, 1.0)
    assert parse_schedule("") == ()
    assert parse_networks("10.0.0.0/8, 192.168.1.5") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.5/32"),
    )
    with pytest.raises(ConfigError):
        parse_networks("10.0.0.0/33")


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_WEBHOOK_RETRY_SCHEDULE", "10ms,20ms")
    monkeypatch.setenv("COMFYFLEET_WEBHOOK_REQUEST_TIMEOUT", "2s")
    monkeypatch.setenv("COMFYFLEET_WEBHOOK_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("COMFYFLEET_WEBHOOK_CONSUMER", "hooks-test")
    cfg = Config.from_env()
    assert cfg.delivery.retry_schedule_s == (0.01, 0.02)
    assert cfg.delivery.request_timeout_s == 2.0
    assert cfg.delivery.claim_lease_s == 32.0
    assert cfg.addresses.allow_loopback is True
    assert cfg.consumer.durable_name == "hooks-test"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRPC_ADDR", "WEBHOOK_ALLOW_LOOPBACK", "WEBHOOK_RETRY_SCHEDULE"):
        monkeypatch.delenv(f"COMFYFLEET_{name}", raising=False)
    cfg = Config.from_env()
    assert cfg.grpc_addr == "127.0.0.1:50054"
    assert cfg.addresses.allow_loopback is False
    assert cfg.delivery.disable_after_s == 5 * 24 * 3600


def test_a_lease_shorter_than_the_timeout_is_refused() -> None:
    with pytest.raises(ConfigError):
        DeliverySettings(request_timeout_s=10.0, claim_lease_s=5.0)
