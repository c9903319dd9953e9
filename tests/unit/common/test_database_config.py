"""COMFYFLEET_DATABASE_URL and COMFYFLEET_MIGRATE_ON_START, as every stateful service reads them."""

from __future__ import annotations

import pytest

from comfyfleet.common.config import ConfigError, DatabaseConfig


def test_defaults_point_at_make_up_and_migrate_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFYFLEET_DATABASE_URL", raising=False)
    monkeypatch.delenv("COMFYFLEET_MIGRATE_ON_START", raising=False)
    cfg = DatabaseConfig.from_env()
    assert cfg.url == "postgresql://postgres@127.0.0.1:55432/comfyfleet"
    assert cfg.migrate_on_start is True


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("TRUE", True)])
def test_migrate_on_start_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("COMFYFLEET_MIGRATE_ON_START", raw)
    assert DatabaseConfig.from_env().migrate_on_start is expected


def test_a_value_that_is_not_a_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_MIGRATE_ON_START", "later")
    with pytest.raises(ConfigError, match="COMFYFLEET_MIGRATE_ON_START='later'"):
        DatabaseConfig.from_env()
