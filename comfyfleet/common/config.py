"""Reading configuration from the environment, once, into frozen dataclasses.

A settings class declares each setting once, as a field: its variable, its default and (from
its type) its parser::

    @dataclass(frozen=True)
    class Config(Settings):
        grpc_addr: str = setting("GRPC_ADDR", "127.0.0.1:50052")
        lease_s: float = setting("SCHEDULER_LEASE", 30.0)
        database: DatabaseConfig = group()

``Config.from_env()`` reads ``COMFYFLEET_GRPC_ADDR`` and so on; a variable unset or empty
keeps the default. Types: ``str``, ``int``, ``float``, ``bool`` (1/0, true/false, yes/no,
on/off), ``Path``, ``X | None`` (unset: None), anything else with ``parse=``.

Durations are the ``float`` fields named ``*_s``. Their variables take one format everywhere:
a number with an optional unit, ``250ms``, ``30s``, ``1.5s``, ``5m``, ``2h``, ``1d``; a plain
number is seconds. Each also answers, until the next release, to its name with ``_S``
appended, which earlier releases read in seconds (``COMFYFLEET_SCHEDULER_LEASE_S=30``): a
process that finds one logs that it is deprecated, and the name without ``_S`` wins.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

PREFIX = "COMFYFLEET_"
# The suffix of a duration's former name (seconds only).
OLD_DURATION_SUFFIX = "_S"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 24 * 3600.0, None: 1.0}
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}
_SETTING = "comfyfleet.setting"
_UNSET = object()
_warned: set[str] = set()

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or cannot be read."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit (ms, s, m, h, d); bare means s."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a number of seconds or a duration such as 30s or 5m")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_bool(text: str) -> bool:
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise ConfigError(f"{text!r} is not a boolean")
    return value


def _number(kind: type[int] | type[float], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{text!r} is not {what}") from None

    return parse


PARSERS: dict[Any, Callable[[str], Any]] = {
    str: str,
    int: _number(int, "an integer"),
    float: _number(float, "a number"),
    bool: parse_bool,
    Path: Path,
}


def _parsed(name: str, raw: str, parse: Callable[[str], T]) -> T:
    """``parse(raw)``; its error names the variable: ``COMFYFLEET_X='soon' is not a number``."""
    try:
        return parse(raw)
    except ValueError as err:  # ConfigError included
        said, value = str(err), repr(raw)
        where = f"{PREFIX}{name}={value}" if said.startswith(value) else f"{PREFIX}{name}: "
        raise ConfigError(where + said.removeprefix(value)) from None


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(PREFIX + name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"{PREFIX}{name} must be set")
        return default
    return value


def _env(name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = os.environ.get(PREFIX + name, "")
    return _parsed(name, raw, parse) if raw else default


def env_int(name: str, default: int) -> int:
    return _env(name, default, PARSERS[int])


def env_float(name: str, default: float) -> float:
    return _env(name, default, PARSERS[float])


def env_bool(name: str, default: bool) -> bool:
    return _env(name, default, parse_bool)


def env_duration(name: str, default_s: float) -> float:
    return _env(name, default_s, parse_duration)


# --- declared settings ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Variable:
    name: str
    parse: Callable[[str], Any] | None
    # Read when ``name`` is unset (another setting's variable, say), in this order.
    also: tuple[str, ...]


@dataclass(frozen=True)
class _Group:
    prefix: str


def setting(
    env: str,
    default: Any = dataclasses.MISSING,
    *,
    parse: Callable[[str], Any] | None = None,
    also: tuple[str, ...] = (),
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
    compare: bool = True,
) -> Any:
    """A field read from ``COMFYFLEET_<env>`` (``env`` after the group's prefix)."""
    metadata = {_SETTING: _Variable(env, parse, also)}
    return dataclasses.field(
        default=default, default_factory=factory, compare=compare, metadata=metadata
    )


def group(
    default: Any = dataclasses.MISSING,
    *,
    prefix: str = "",
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A field holding settings of their own (a ``Settings`` dataclass), read with ``prefix``
    before their variables' names; the variables left unset keep the default's values."""
    metadata = {_SETTING: _Group(prefix)}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


class Settings:
    """A frozen dataclass whose fields say where they are read from (``setting``, ``group``).

    A subclass whose settings depend on each other overrides ``from_env`` and passes what it
    worked out as ``given``.
    """

    @classmethod
    def from_env(cls, *, prefix: str = "", base: Self | None = None, **given: Any) -> Self:
        """The settings from the environment: ``given`` values as they are, the others from
        their variables, else from ``base`` (default: the fields' defaults)."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            spec = f.metadata.get(_SETTING)
            if f.name in given or spec is None:
                continue
            if isinstance(spec, _Group):
                inner = getattr(base, f.name) if base is not None else _default(f)
                values[f.name] = hints[f.name].from_env(prefix=prefix + spec.prefix, base=inner)
            else:
                value = _read(f, spec, hints[f.name], prefix)
                if value is not _UNSET:
                    values[f.name] = value
        values.update(given)
        if base is not None:
            return dataclasses.replace(base, **values)  # type: ignore[type-var]
        return cls(**values)

    @classmethod
    def read(cls, field_name: str, prefix: str = "") -> Any:
        """One setting's value from its variables; None when they are unset."""
        (f,) = (f for f in dataclasses.fields(cls) if f.name == field_name)  # type: ignore[arg-type]
        value = _read(f, f.metadata[_SETTING], typing.get_type_hints(cls)[f.name], prefix)
        return None if value is _UNSET else value

    @classmethod
    def variable(cls, field_name: str, prefix: str = "") -> str:
        """The variable of a setting, for messages: ``COMFYFLEET_X`` (``(or COMFYFLEET_X_S)``
        for a duration, which may have been set by its former name)."""
        (f,) = (f for f in dataclasses.fields(cls) if f.name == field_name)  # type: ignore[arg-type]
        name = PREFIX + prefix + f.metadata[_SETTING].name
        duration = _is_duration(f.name, typing.get_type_hints(cls)[f.name])
        return f"{name} (or {name}{OLD_DURATION_SUFFIX})" if duration else name

    @classmethod
    def variables(cls, prefix: str = "") -> dict[str, str]:
        """Each variable the settings read (``COMFYFLEET_`` included) -> its field's path."""
        hints = typing.get_type_hints(cls)
        found: dict[str, str] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            spec = f.metadata.get(_SETTING)
            if isinstance(spec, _Group):
                inner = hints[f.name].variables(prefix + spec.prefix)
                found |= {name: f"{f.name}.{path}" for name, path in inner.items()}
            elif isinstance(spec, _Variable):
                found[PREFIX + prefix + spec.name] = f.name
        return found


def _read(f: dataclasses.Field[Any], spec: _Variable, hint: Any, prefix: str) -> Any:
    found = _lookup(prefix, spec, _is_duration(f.name, hint))
    if found is None:
        return _UNSET
    name, raw = found
    return _parsed(name, raw, _parser(spec, f.name, hint))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _optional(hint: Any) -> Any:
    """X for ``X | None``, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and len(typing.get_args(hint)) == 2:
            return inner[0]
    return None


def _is_duration(field_name: str, hint: Any) -> bool:
    return field_name.endswith("_s") and (_optional(hint) or hint) is float


def _parser(spec: _Variable, field_name: str, hint: Any) -> Callable[[str], Any]:
    if spec.parse is not None:
        return spec.parse
    if _is_duration(field_name, hint):
        return parse_duration
    parse = PARSERS.get(_optional(hint) or hint)
    if parse is None:
        raise TypeError(f"{field_name}: no parser for {hint}; give setting(..., parse=)")
    return parse


def _lookup(prefix: str, spec: _Variable, duration: bool) -> tuple[str, str] | None:
    """The first of the setting's variables that is set: (its name, its value)."""
    names = [prefix + spec.name, *(prefix + n for n in spec.also)]
    old = prefix + spec.name + OLD_DURATION_SUFFIX if duration else None
    if old is not None:
        names.append(old)
    for name in names:
        value = os.environ.get(PREFIX + name, "")
        if value:
            if name == old:
                _deprecated(old, prefix + spec.name)
            return name, value
    return None


def _deprecated(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        log.warning(
            "%s%s is deprecated and read only until the next release: set %s%s, a duration"
            " such as 30s, 1.5s or 5m (a plain number is seconds)",
            PREFIX,
            old,
            PREFIX,
            new,
        )


# --- what several services read --------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseConfig(Settings):
    url: str = setting("DATABASE_URL", "postgresql://postgres@127.0.0.1:55432/comfyfleet")
    # False: a service finding migrations not yet applied refuses to start, and an operator
    # applies them first with ``python -m services.migrate`` (a deploy job, say).
    migrate_on_start: bool = setting("MIGRATE_ON_START", True)


@dataclass(frozen=True)
class NatsConfig(Settings):
    url: str = setting("NATS_URL", "nats://127.0.0.1:54222")
    stream: str = setting("NATS_STREAM", "EXECUTION_EVENTS")
    subject_prefix: str = setting("NATS_SUBJECT_PREFIX", "comfyfleet.events")


@dataclass(frozen=True)
class S3Config(Settings):
    endpoint: str = setting("S3_ENDPOINT", "http://127.0.0.1:59000")
    access_key: str = setting("S3_ACCESS_KEY", "comfyfleet")
    secret_key: str = setting("S3_SECRET_KEY", "comfyfleet-secret")
    region: str = setting("S3_REGION", "us-east-1")
    bucket: str = setting("S3_BUCKET", "comfyfleet")
