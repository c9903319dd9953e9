"""How the comfyui engine reaches its ComfyUI: a process it starts, or a server at a URL."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from comfyfleet.common.config import ConfigError, env_float, env_str


@dataclass(frozen=True)
class ComfyUISettings:
    """Exactly one of ``command`` and ``url`` is set.

    ``command`` is ComfyUI's command line without the flags the engine adds itself
    (``--listen``, ``--port``, ``--input-directory``, ``--output-directory`` and the device);
    for example ``python /opt/ComfyUI/main.py --disable-auto-launch``.
    """

    command: str = ""
    url: str = ""
    # How long a starting ComfyUI may take to answer before the start counts as failed.
    startup_timeout_s: float = 180.0
    # The websocket may stay silent this long (a long node sends nothing) before the run is
    # followed through GET /history as well.
    watchdog_s: float = 30.0
    # Between GET /history polls once the watchdog fired.
    poll_s: float = 1.0
    # One HTTP request to ComfyUI (not the run) may take this long.
    request_timeout_s: float = 60.0
    # After a cancel, how long ComfyUI may take to stop the prompt before a started process
    # is killed (it is restarted before the next run).
    interrupt_timeout_s: float = 10.0

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
    def from_env(cls) -> ComfyUISettings:
        """From ``COMFYFLEET_COMFYUI_*``: COMMAND or URL, and the timings by their names."""
        d = cls(url="http://defaults")
        try:
            return cls(
                command=env_str("COMFYUI_COMMAND", ""),
                url=env_str("COMFYUI_URL", ""),
                startup_timeout_s=env_float("COMFYUI_STARTUP_TIMEOUT_S", d.startup_timeout_s),
                watchdog_s=env_float("COMFYUI_WATCHDOG_S", d.watchdog_s),
                poll_s=env_float("COMFYUI_POLL_S", d.poll_s),
                request_timeout_s=env_float("COMFYUI_REQUEST_TIMEOUT_S", d.request_timeout_s),
                interrupt_timeout_s=env_float("COMFYUI_INTERRUPT_TIMEOUT_S", d.interrupt_timeout_s),
            )
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"COMFYFLEET_COMFYUI_*: {err}") from err

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command)
