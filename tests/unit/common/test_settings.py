"""Declared settings: each field names its variable once; durations take one format, and a
duration's former ``_S`` name still works for a release."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from comfyfleet.common import config as config_module
from comfyfleet.common.config import ConfigError, Settings, group, parse_duration, setting
from services.executor.config import Config as ExecutorConfig
from services.gateway.config import Config as GatewayConfig
from services.models.config import Config as ModelsConfig
from services.scheduler.config import Config as SchedulerConfig
from services.webhook.config import Config as WebhookConfig

SERVICE_CONFIGS = [GatewayConfig, SchedulerConfig, ModelsConfig, WebhookConfig, ExecutorConfig]


@dataclasses.dataclass(frozen=True)
class Inner(Settings):
    wait_s: float = setting("WAIT", 1.0)
    tries: int = setting("TRIES", 3)


@dataclasses.dataclass(frozen=True)
class Outer(Settings):
    name: str = setting("T_NAME", "x")
    poll_interval_s: float = setting("T_POLL_INTERVAL", 1.0)
    limit: int | None = setting("T_LIMIT", None)
    folder: Path | None = setting("T_FOLDER", None)
    enabled: bool = setting("T_ENABLED", False)
    region: str = setting("T_REGION", "here", also=("T_OTHER_REGION",))
    inner: Inner = group(Inner(wait_s=2.0), prefix="T_INNER_")
    untouched: int = 7


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "_warned", set())


def setenv(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"COMFYFLEET_{name}", value)


def test_unset_variables_keep_the_defaults() -> None:
    assert Outer.from_env() == Outer()
    assert Outer.from_env().inner == Inner(wait_s=2.0, tries=3)


def test_each_type_is_read_by_its_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        T_NAME="y",
        T_LIMIT="12",
        T_FOLDER="/tmp/f",
        T_ENABLED="yes",
        T_OTHER_REGION="there",
        T_INNER_TRIES="5",
    )

    read = Outer.from_env()

    assert (read.name, read.limit, read.folder, read.enabled) == ("y", 12, Path("/tmp/f"), True)
    assert read.region == "there"
    assert read.inner == Inner(wait_s=2.0, tries=5)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1.5s", 1.5), ("5m", 300.0), ("2h", 7200.0), ("250ms", 0.25), ("2", 2.0)],
)
def test_durations_take_one_format(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: float
) -> None:
    setenv(monkeypatch, T_POLL_INTERVAL=text, T_INNER_WAIT=text)

    read = Outer.from_env()

    assert read.poll_interval_s == seconds == read.inner.wait_s


def test_a_durations_former_name_is_read_and_said_to_be_deprecated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    setenv(monkeypatch, T_POLL_INTERVAL_S="1.0", T_INNER_WAIT_S="4")

    with caplog.at_level(logging.WARNING):
        read = Outer.from_env()
        Outer.from_env()

    assert (read.poll_interval_s, read.inner.wait_s) == (1.0, 4.0)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, "once per variable"
    assert warned[0].startswith("COMFYFLEET_T_POLL_INTERVAL_S is deprecated")
    assert "set COMFYFLEET_T_POLL_INTERVAL, a duration such as 30s" in warned[0]


def test_the_new_name_wins_over_the_former(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, T_POLL_INTERVAL_S="1.0", T_POLL_INTERVAL="30s")

    assert Outer.from_env().poll_interval_s == 30.0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("T_LIMIT", "many", "COMFYFLEET_T_LIMIT='many' is not an integer"),
        ("T_ENABLED", "later", "COMFYFLEET_T_ENABLED='later' is not a boolean"),
        ("T_POLL_INTERVAL", "soon", "COMFYFLEET_T_POLL_INTERVAL='soon' is not a number of"),
        ("T_POLL_INTERVAL_S", "-1", "COMFYFLEET_T_POLL_INTERVAL_S='-1' is not a number of"),
        ("T_INNER_WAIT", "5x", "COMFYFLEET_T_INNER_WAIT='5x' is not a number of seconds or"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    setenv(monkeypatch, **{name: value})

    with pytest.raises(ConfigError, match=message):
        Outer.from_env()


def test_given_values_are_taken_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, T_NAME="from env")

    assert Outer.from_env(name="given").name == "given"


def test_one_setting_and_its_variable_for_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, T_POLL_INTERVAL="1m")

    assert Outer.read("poll_interval_s") == 60.0
    assert Outer.read("limit") is None
    assert Outer.variable("name") == "COMFYFLEET_T_NAME"
    assert Outer.variable("poll_interval_s") == (
        "COMFYFLEET_T_POLL_INTERVAL (or COMFYFLEET_T_POLL_INTERVAL_S)"
    )
    assert Outer.variables() == {
        "COMFYFLEET_T_NAME": "name",
        "COMFYFLEET_T_POLL_INTERVAL": "poll_interval_s",
        "COMFYFLEET_T_LIMIT": "limit",
        "COMFYFLEET_T_FOLDER": "folder",
        "COMFYFLEET_T_ENABLED": "enabled",
        "COMFYFLEET_T_REGION": "region",
        "COMFYFLEET_T_INNER_WAIT": "inner.wait_s",
        "COMFYFLEET_T_INNER_TRIES": "inner.tries",
    }


def test_parse_duration_refuses_what_is_not_one() -> None:
    for bad in ("", "5x", "-1s", "s", "1.5.2s"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


@pytest.mark.parametrize("config", SERVICE_CONFIGS, ids=lambda c: c.__module__)
def test_service_durations_are_named_without_a_unit(config: type[Settings]) -> None:
    """The unit is in the value now; ``_S`` is only ever a duration's former name."""
    named = [name for name in config.variables() if name.endswith("_S")]
    assert named == [name for name in named if name.endswith("RATE_PER_S")], named


def test_old_and_new_names_both_work_for_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, SCHEDULER_POLL_INTERVAL_S="1.0", WEBHOOK_POLL_INTERVAL="30s")
    setenv(monkeypatch, SCHEDULER_LEASE="1m", SHUTDOWN_GRACE_S="4")

    scheduler, webhook = SchedulerConfig.from_env(), WebhookConfig.from_env()

    assert (scheduler.settings.poll_interval_s, scheduler.settings.lease_s) == (1.0, 60.0)
    assert (webhook.delivery.poll_interval_s, webhook.shutdown_grace_s) == (30.0, 4.0)
    assert GatewayConfig.from_env().shutdown_grace_s == 4.0
