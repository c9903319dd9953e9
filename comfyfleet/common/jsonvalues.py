"""JSON values after a trip through protobuf: Struct to plain values, doubles back to ints.

Both walk a value with a stack of their own, not by recursion: a client decides how deep
its JSON is, and Python's recursion limit must never be what answers it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import struct_pb2

_EXACT = 2**53

_Container = dict[str, Any] | list[Any]


def integral_floats_to_ints(value: Any) -> Any:
    """Turns every integral float of a JSON value into an int.

    A protobuf Struct carries every number as a double, so ``64`` comes back as ``64.0``:
    ComfyUI would treat it as a float (and a link ``["1", 0.0]`` as no link at all). Go's
    protojson, and so grpc-gateway, also writes integral doubles without a fraction.
    """
    top = _shell(value)
    stack: list[tuple[Any, _Container]] = [(value, top)] if isinstance(top, dict | list) else []
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            converted = _shell(item)
            _put(target, key, converted)
            if isinstance(converted, dict | list):
                stack.append((item, converted))
    return top


def _shell(item: Any) -> Any:
    """An int for an integral float, an empty container for a container, else the item."""
    if isinstance(item, float) and item.is_integer() and abs(item) < _EXACT:
        return int(item)
    if isinstance(item, dict):
        return {}
    if isinstance(item, list):
        return []
    return item


def _put(target: _Container, key: Any, item: Any) -> None:
    if isinstance(target, dict):
        target[key] = item
    else:
        target.append(item)


def struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain dicts, lists, floats, strings, bools and ``None``.

    Unlike ``json_format.MessageToDict``, NaN and infinities come out as the floats they are
    (so that the caller can name the field holding one), and a Value with no kind set is
    ``None``.
    """
    top: dict[str, Any] = {}
    stack: list[tuple[struct_pb2.Struct | struct_pb2.ListValue, _Container]] = [(struct, top)]
    while stack:
        source, target = stack.pop()
        items = (
            source.fields.items()
            if isinstance(source, struct_pb2.Struct)
            else enumerate(source.values)
        )
        for key, item in items:
            kind = item.WhichOneof("kind")
            if kind == "struct_value":
                made: Any = {}
                stack.append((item.struct_value, made))
            elif kind == "list_value":
                made = []
                stack.append((item.list_value, made))
            elif kind is None or kind == "null_value":
                made = None
            else:
                made = getattr(item, kind)
            _put(target, key, made)
    return top


# After json.loads a str holds a surrogate only when a "\ud800"-style escape stood alone
# (an escaped pair becomes one code point): it is not Unicode text, and protobuf, PostgreSQL
# and UTF-8 all refuse it.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lone_surrogate_paths(value: Any) -> list[str]:
    """The paths (``a.b[0]``, ``labels["k"]``) of the strings and object keys of a decoded
    JSON value that hold a lone surrogate, in document order."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                found.append(path)
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                child_path = _member(path, key)
                if _SURROGATE.search(key):
                    found.append(child_path)
                children.append((child, child_path))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(v, f"{path}[{i}]") for i, v in enumerate(item)]))
    return found


def _member(path: str, key: str) -> str:
    if _NAME.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"
