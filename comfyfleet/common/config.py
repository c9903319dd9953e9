"""Reading configuration from the environment, once, into frozen dataclasses."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

PREFIX = "COMFYFLEET_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 24 * 3600.0, None: 1.0}


class ConfigError(ValueError):
    """A setting is missing or cannot be read."""


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(PREFIX + name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"{PREFIX}{name} must be set")
        return default
    return value


def env_int(name: str, default: int) -> int:
    raw = env_str(name, str(default))
    try:
        return int(raw)
    except ValueError as err:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not an integer") from err


def env_float(name: str, default: float) -> float:
    raw = env_str(name, str(default))
    try:
        return float(raw)
    except ValueError as err:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a number") from err


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit (ms, s, m, h, d); bare means s."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a duration such as 5s, 30m or 2h")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def env_duration(name: str, default_s: float) -> float:
    raw = env_str(name, f"{default_s}s")
    try:
        return parse_duration(raw)
    except ConfigError as err:
        raise ConfigError(f"{PREFIX}{name}: {err}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "1" if default else "0").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r} is not a boolean")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    # False: a service finding migrations not yet applied refuses to start, and an operator
    # applies them first with ``python -m services.migrate`` (a deploy job, say).
    migrate_on_start: bool = True

    @classmethod
    def from_env(cls) -> DatabaseConfig:
        return cls(
            url=env_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:55432/comfyfleet"),
            migrate_on_start=env_bool("MIGRATE_ON_START", True),
        )


@dataclass(frozen=True)
class NatsConfig:
    url: str
    stream: str = "EXECUTION_EVENTS"
    subject_prefix: str = "comfyfleet.events"

    @classmethod
    def from_env(cls) -> NatsConfig:
        return cls(
            url=env_str("NATS_URL", "nats://127.0.0.1:54222"),
            stream=env_str("NATS_STREAM", "EXECUTION_EVENTS"),
            subject_prefix=env_str("NATS_SUBJECT_PREFIX", "comfyfleet.events"),
        )


@dataclass(frozen=True)
class S3Config:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    bucket: str

    @classmethod
    def from_env(cls) -> S3Config:
        return cls(
            endpoint=env_str("S3_ENDPOINT", "http://127.0.0.1:59000"),
            access_key=env_str("S3_ACCESS_KEY", "comfyfleet"),
            secret_key=env_str("S3_SECRET_KEY", "comfyfleet-secret"),
            region=env_str("S3_REGION", "us-east-1"),
            bucket=env_str("S3_BUCKET", "comfyfleet"),
        )
