"""The comfyui engine's settings, and how the executor's config carries them."""

from __future__ import annotations

import pytest

from comfyfleet.common.config import ConfigError
from services.executor.comfyui import ComfyUISettings
from services.executor.comfyui.process import device_flags
from services.executor.config import Config

NAMES = (
    "EXECUTOR_ENGINE",
    "COMFYUI_COMMAND",
    "COMFYUI_URL",
    "COMFYUI_STARTUP_TIMEOUT_S",
    "COMFYUI_WATCHDOG_S",
    "COMFYUI_POLL_S",
    "COMFYUI_REQUEST_TIMEOUT_S",
    "COMFYUI_INTERRUPT_TIMEOUT_S",
    "ENVIRONMENT",
    "ENVIRONMENT_SPEC",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(f"COMFYFLEET_{name}", raising=False)


def test_the_native_engine_is_the_default() -> None:
    cfg = Config.from_env()

    assert (cfg.engine, cfg.comfyui) == ("native", None)


def test_a_comfyui_command_and_its_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_ENGINE", "comfyui")
    monkeypatch.setenv("COMFYFLEET_ENVIRONMENT", "comfy")
    monkeypatch.setenv("COMFYFLEET_COMFYUI_COMMAND", "python '/opt/Comfy UI/main.py' --fast")
    monkeypatch.setenv("COMFYFLEET_COMFYUI_STARTUP_TIMEOUT_S", "300")
    monkeypatch.setenv("COMFYFLEET_COMFYUI_WATCHDOG_S", "12.5")

    cfg = Config.from_env()

    assert cfg.engine == "comfyui" and cfg.comfyui is not None
    assert cfg.comfyui.argv == ["python", "/opt/Comfy UI/main.py", "--fast"]
    assert (cfg.comfyui.startup_timeout_s, cfg.comfyui.watchdog_s) == (300.0, 12.5)
    assert (cfg.comfyui.poll_s, cfg.comfyui.interrupt_timeout_s) == (1.0, 10.0)


def test_a_comfyui_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_EXECUTOR_ENGINE", "comfyui")
    monkeypatch.setenv("COMFYFLEET_ENVIRONMENT", "comfy")
    monkeypatch.setenv("COMFYFLEET_COMFYUI_URL", "http://comfy:8188/")

    cfg = Config.from_env()

    assert cfg.comfyui == ComfyUISettings(url="http://comfy:8188/")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXECUTOR_ENGINE": "comfy"}, "EXECUTOR_ENGINE must be one of"),
        ({"EXECUTOR_ENGINE": "comfyui"}, "exactly one of"),
        (
            {"EXECUTOR_ENGINE": "comfyui", "COMFYUI_URL": "http://a", "COMFYUI_COMMAND": "x"},
            "exactly one of",
        ),
        ({"EXECUTOR_ENGINE": "comfyui", "COMFYUI_URL": "comfy:8188"}, "must be http"),
        (
            {"EXECUTOR_ENGINE": "comfyui", "COMFYUI_URL": "http://a", "COMFYUI_POLL_S": "0"},
            "must be positive",
        ),
        (
            {"EXECUTOR_ENGINE": "comfyui", "COMFYUI_URL": "http://a", "COMFYUI_POLL_S": "soon"},
            "is not a number",
        ),
    ],
)
def test_bad_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"COMFYFLEET_{name}", value)

    with pytest.raises(ConfigError, match=message):
        Config.from_env()


def test_comfyui_settings_need_the_comfyui_engine() -> None:
    with pytest.raises(ConfigError, match="and only it"):
        Config(comfyui=ComfyUISettings(url="http://a"))


@pytest.mark.parametrize(
    ("device", "flags"),
    [("cpu", ["--cpu"]), ("cuda:0", ["--cuda-device", "0"]), ("cuda:3", ["--cuda-device", "3"])],
)
def test_the_device_becomes_comfyuis_flags(device: str, flags: list[str]) -> None:
    assert device_flags(device) == flags
