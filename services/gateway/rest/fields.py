"""Request fields from strings: path variables, query parameters and headers.

Every value becomes the field's proto3 JSON form and goes through ``json_format``, so strings
are parsed exactly as in a JSON body: enums by name or number, 64-bit integers, Timestamp and
Duration in their JSON form, and so on. Query parameters follow grpc-gateway: ``a.b=x`` for
nested fields (original or lowerCamelCase names), repeated keys for repeated fields,
``map[key]=value`` for maps, unknown names ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from google.protobuf import descriptor, json_format, message

from comfyfleet.common.errors import FieldViolation

FD: TypeAlias = descriptor.FieldDescriptor

FIELD_MASK = "google.protobuf.FieldMask"
# Messages whose JSON form is a single string or scalar, so one query value can carry them.
_STRING_MESSAGES = {"google.protobuf.Timestamp", "google.protobuf.Duration", FIELD_MASK}
WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false"}
_MAP_KEY = re.compile(r"^(.+)\[(.*)\]$")


class BadValue(ValueError):
    """A string that cannot become the field it was given for."""


def field_named(message_type: descriptor.Descriptor, name: str) -> FD | None:
    """The field called ``name`` by its original or its lowerCamelCase JSON name."""
    found = message_type.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in message_type.fields if f.json_name == name), None)


def resolve(message_type: descriptor.Descriptor, path: Sequence[str]) -> list[FD] | None:
    """The fields along a dotted path, or None when a name does not exist on the way."""
    chain: list[FD] = []
    current: descriptor.Descriptor | None = message_type
    for name in path:
        if current is None:
            return None
        found = field_named(current, name)
        if found is None:
            return None
        chain.append(found)
        current = found.message_type if is_plain_message(found) else None
    return chain


def is_path_leaf(fd: FD) -> bool:
    """Whether a path variable may bind the field: singular, and a scalar, enum or wrapper."""
    if _is_repeated(fd):
        return False
    return fd.type != FD.TYPE_MESSAGE or is_scalar_message(fd)


def json_value(fd: FD, raw: str) -> Any:
    """The proto3 JSON value of one string for a singular (or one element of a repeated) field."""
    if fd.type == FD.TYPE_MESSAGE:
        if not is_scalar_message(fd):
            raise BadValue(f"a {fd.message_type.full_name} cannot be given as a string")
        if fd.message_type.full_name in WRAPPERS:
            return json_value(fd.message_type.fields_by_name["value"], raw)
        if fd.message_type.full_name == FIELD_MASK:
            return _field_mask_json(raw)
        return raw
    if fd.type == FD.TYPE_BOOL:
        lowered = raw.lower()
        if lowered not in _TRUE | _FALSE:
            raise BadValue(f"{raw!r} is not a boolean")
        return lowered in _TRUE
    return raw


def _field_mask_json(raw: str) -> str:
    """A FieldMask's JSON form from comma-separated paths in either spelling.

    grpc-gateway takes query paths as written (``update_mask=event_types``), while the JSON
    form is lowerCamelCase; both spellings become the same mask here.
    """
    paths = [p.strip() for p in raw.split(",") if p.strip()]
    return ",".join(_CAMEL.sub(lambda m: m.group(1).upper(), p) for p in paths)


_CAMEL = re.compile(r"_([a-z0-9])")


def body_field_mask(value: Any, message_type: descriptor.Descriptor, prefix: str = "") -> list[str]:
    """The proto paths a JSON object sets, for PATCH requests that leave ``update_mask`` empty.

    This is grpc-gateway's patch feature: nested objects are walked, while maps, lists,
    well-known types and empty objects count as one field each.
    """
    if not isinstance(value, dict):
        return []
    paths: list[str] = []
    for key, sub in value.items():
        fd = field_named(message_type, key)
        if fd is None:
            continue
        path = prefix + fd.name
        if is_plain_message(fd) and not is_well_known(fd) and isinstance(sub, dict) and sub:
            paths += body_field_mask(sub, fd.message_type, path + ".")
        else:
            paths.append(path)
    return paths


def set_from_strings(msg: message.Message, path: Sequence[str], values: Sequence[str]) -> bool:
    """Sets the field at ``path`` from strings; False when no such field exists.

    Raises BadValue when the values do not fit the field. The field is parsed in a scratch
    message of its own and merged, so one bad value never leaves another half-set.
    """
    key, map_key = _split_map_key(path)
    chain = resolve(msg.DESCRIPTOR, key)
    if chain is None:
        return False
    tree = _leaf_tree(chain, map_key, values)
    scratch = type(msg)()
    try:
        json_format.ParseDict(tree, scratch)
    except json_format.ParseError as err:
        raise BadValue(innermost_error(str(err))) from err
    msg.MergeFrom(scratch)
    return True


def parse_query(
    msg: message.Message, query: Mapping[str, Sequence[str]], skip: Sequence[str]
) -> list[FieldViolation]:
    """Sets fields from query parameters, except fields at or under a ``skip`` path.

    Unknown names are ignored, as grpc-gateway does: a URL may carry parameters meant for
    something else. Returns one violation per parameter that did not fit.
    """
    violations: list[FieldViolation] = []
    for name, values in query.items():
        path = name.split(".")
        chain = resolve(msg.DESCRIPTOR, _split_map_key(path)[0])
        if chain is None or _skipped(chain, skip):
            continue
        try:
            set_from_strings(msg, path, values)
        except BadValue as err:
            violations.append(FieldViolation(name, str(err), "INVALID_QUERY_PARAMETER"))
    return violations


def _skipped(chain: list[FD], skip: Sequence[str]) -> bool:
    names = [fd.name for fd in chain]
    for path in skip:
        bound = path.split(".")
        common = min(len(bound), len(names))
        if names[:common] == bound[:common]:
            return True
    return False


def _split_map_key(path: Sequence[str]) -> tuple[list[str], str | None]:
    match = _MAP_KEY.match(path[-1])
    if match is None:
        return list(path), None
    return [*path[:-1], match.group(1)], match.group(2)


def _leaf_tree(chain: list[FD], map_key: str | None, values: Sequence[str]) -> dict[str, Any]:
    leaf = chain[-1]
    if map_key is not None:
        value: Any = {map_key: _map_value(leaf, map_key, values)}
    elif _is_repeated(leaf):
        value = [json_value(leaf, raw) for raw in values]
    elif len(values) != 1:
        raise BadValue(f"{leaf.name} takes one value, got {len(values)}")
    else:
        value = json_value(leaf, values[0])
    for fd in reversed(chain):
        value = {fd.name: value}
    return value  # type: ignore[no-any-return]


def _map_value(fd: FD, map_key: str, values: Sequence[str]) -> Any:
    if not is_map(fd):
        raise BadValue(f"{fd.name} is not a map, so {fd.name}[{map_key}] means nothing")
    if len(values) != 1:
        raise BadValue(f"{fd.name}[{map_key}] takes one value, got {len(values)}")
    return json_value(fd.message_type.fields_by_name["value"], values[0])


def innermost_error(text: str) -> str:
    """The useful end of json_format's nested 'Failed to parse x field: ...' messages."""
    while True:
        match = _NESTED.match(text)
        if match is None:
            return _AT_SUFFIX.sub("", text).rstrip(".") or text
        text = match.group(2)


def error_field_path(text: str) -> str:
    """The field a json_format error is about, as the client spelled it, or "" when unclear.

    json_format nests 'Failed to parse a field: Failed to parse b field: ...', and names an
    unknown field with the path of the message that lacks it.
    """
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown is not None:
        _, _, inside = unknown.group(2).partition(".")
        return f"{inside}.{unknown.group(1)}" if inside else unknown.group(1)
    names: list[str] = []
    while (match := _NESTED.match(text)) is not None:
        names.append(match.group(1))
        text = match.group(2)
    return ".".join(names)


_NESTED = re.compile(r"^Failed to parse (\S+) field: (.*)$", re.DOTALL)
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)" at "([^"]+)"')
_AT_SUFFIX = re.compile(r'\s+at "?[\w.\[\]]*"?\.?\s*$')


def _is_repeated(fd: FD) -> bool:
    return bool(fd.is_repeated)


def is_map(fd: FD) -> bool:
    return (
        _is_repeated(fd) and fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry
    )


def is_scalar_message(fd: FD) -> bool:
    """Whether the field is a message whose JSON form is one string or scalar."""
    name = fd.message_type.full_name
    return name in _STRING_MESSAGES or name in WRAPPERS


def is_well_known(fd: FD) -> bool:
    return bool(fd.message_type.full_name.startswith("google.protobuf."))


def is_plain_message(fd: FD) -> bool:
    """A singular message that a dotted path may step into."""
    return fd.type == FD.TYPE_MESSAGE and not _is_repeated(fd) and not is_scalar_message(fd)
