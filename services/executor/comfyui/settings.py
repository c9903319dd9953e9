"""How the comfyui engine reaches its ComfyUI: a process it starts, or a server at a URL."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Self

from comfyfleet.common.config import ConfigError, Settings, setting


@dataclass(frozen=True)
class ComfyUISettings(Settings):
    """Exactly one of ``command`` and ``url`` is set.

    ``command`` is ComfyUI's command line without the flags the engine adds itself
    (``--listen``, ``--port``, ``--input-directory``, ``--output-directory`` and the device);
    for example ``python /opt/ComfyUI/main.py --disable-auto-launch``.
    """

    command: str = setting("COMFYUI_COMMAND", "")
    url: str = setting("COMFYUI_URL", "")
    # How long a starting ComfyUI may take to answer before the start counts as failed.
    startup_timeout_s: float = setting("COMFYUI_STARTUP_TIMEOUT", 180.0)
    # The websocket may stay silent this long (a long node sends nothing) before the run is
    # followed through GET /history as well.
    watchdog_s: float = setting("COMFYUI_WATCHDOG", 30.0)
    # Between GET /history polls once the watchdog fired.
    poll_s: float = setting("COMFYUI_POLL", 1.0)
    # One HTTP request to ComfyUI (not the run) may take this long.
    request_timeout_s: float = setting("COMFYUI_REQUEST_TIMEOUT", 60.0)
    # After a cancel, how long ComfyUI may take to stop the prompt before a started process
    # is killed (it is restarted before the next run).
    interrupt_timeout_s: float = setting("COMFYUI_INTERRUPT_TIMEOUT", 10.0)

    def __post_init__(self) -> None:
        if bool(self.command.strip()) == bool(self.url.strip()):
            raise ValueError("set exactly one of the ComfyUI command and the ComfyUI URL")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the ComfyUI URL must be http(s)://, got {self.url!r}")
        timings = (
            self.startup_timeout_s,
            self.watchdog_s,
            self.poll_s,
            self.request_timeout_s,
            self.interrupt_timeout_s,
        )
        if min(timings) <= 0:
            raise ValueError("ComfyUI timeouts and intervals must be positive")

    @classmethod
    def from_env(cls, **given: Any) -> Self:
        """From ``COMFYFLEET_COMFYUI_*``: COMMAND or URL, and the timings by their names."""
        try:
            return super().from_env(**given)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"COMFYFLEET_COMFYUI_*: {err}") from err

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command)
