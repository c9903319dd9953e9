"""HTTP request parts -> the gRPC request message, and gRPC responses -> JSON.

As in grpc-gateway: the body fills the whole message (``body: "*"``) or one field, query
parameters fill what neither the path nor the body binds, and path variables win over both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, message, message_factory

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.jsonvalues import integral_floats_to_ints, lone_surrogate_paths
from services.gateway.rest import fields
from services.gateway.rest.routing import Route

# grpc-gateway's patch feature: a PATCH with a body field and this FieldMask field left empty
# updates exactly the fields the body sets.
UPDATE_MASK_FIELD = "update_mask"
# A Last-Event-ID header resumes a stream whose request has this field (WatchExecution's).
RESUME_FIELD = "after_sequence"
LAST_EVENT_ID = "Last-Event-ID"


@dataclass(frozen=True)
class JsonOptions:
    """grpc-gateway v2's defaults: unpopulated fields are written, unknown ones are dropped."""

    emit_unpopulated: bool = True
    discard_unknown: bool = True


@dataclass(frozen=True)
class HttpInput:
    """The parts of an HTTP request that carry request fields."""

    variables: Mapping[str, str]
    query: Mapping[str, Sequence[str]]
    body: bytes
    last_event_id: str | None = None


def build_request(route: Route, given: HttpInput, options: JsonOptions) -> message.Message:
    """The request message, or InvalidArgument with one violation per bad part."""
    msg = message_factory.GetMessageClass(route.method.input_type)()
    body, violations = _parse_json(given.body) if route.body else (None, [])
    if body is not None:
        violations += _apply_body(msg, route.body, body, options)
    if route.body != "*":
        skip = [*route.path_fields, *([route.body] if route.body else [])]
        violations += fields.parse_query(msg, given.query, skip)
        _imply_update_mask(msg, route, body)
    violations += _apply_path(msg, given.variables)
    violations += _apply_last_event_id(msg, given.last_event_id)
    if violations:
        summary = "; ".join(
            f"{v.field}: {v.description}" if v.field else v.description for v in violations
        )
        raise InvalidArgument(f"invalid request: {summary}", violations)
    return msg


def _parse_json(raw: bytes) -> tuple[Any, list[FieldViolation]]:
    """The body's JSON value (None for an empty body), or a violation when it is not JSON."""
    if not raw.strip():
        return None, []
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        text = f"the request body is not valid JSON: {err}"
        return None, [FieldViolation("", text, "INVALID_JSON")]
    except RecursionError:
        # Deeper than the decoder reads (about a thousand levels); no field can be that deep.
        return None, [FieldViolation("", "the request body is nested too deeply", "INVALID_JSON")]
    text = "holds a lone surrogate (an unpaired \\ud800 to \\udfff escape), which is not text"
    bad = [FieldViolation(path, text, "INVALID_TEXT") for path in lone_surrogate_paths(value)]
    return (None, bad) if bad else (value, [])


def _apply_body(
    msg: message.Message, body_field: str, value: Any, options: JsonOptions
) -> list[FieldViolation]:
    if body_field == "*" and not isinstance(value, dict):
        return [FieldViolation("", "the request body must be a JSON object", "INVALID_JSON")]
    tree = value if body_field == "*" else {body_field: value}
    try:
        json_format.ParseDict(tree, msg, ignore_unknown_fields=options.discard_unknown)
    except json_format.ParseError as err:
        return [_body_violation(str(err))]
    return []


def _imply_update_mask(msg: message.Message, route: Route, body: Any) -> None:
    fd = msg.DESCRIPTOR.fields_by_name.get(UPDATE_MASK_FIELD)
    if route.http_method != "PATCH" or route.body in ("", "*") or fd is None:
        return
    if fd.message_type is None or fd.message_type.full_name != fields.FIELD_MASK:
        return
    mask = getattr(msg, UPDATE_MASK_FIELD)
    if mask.paths:
        return
    body_type = msg.DESCRIPTOR.fields_by_name[route.body].message_type
    if body_type is not None:
        mask.paths.extend(fields.body_field_mask(body, body_type))


def _body_violation(text: str) -> FieldViolation:
    """Names the offending field the way the client spelled it, as far as json_format says."""
    path = fields.error_field_path(text)
    return FieldViolation(path, fields.innermost_error(text), "INVALID_FIELD_VALUE")


def _apply_path(msg: message.Message, variables: Mapping[str, str]) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for path, value in variables.items():
        try:
            fields.set_from_strings(msg, path.split("."), [value])
        except fields.BadValue as err:
            out.append(FieldViolation(path, str(err), "INVALID_PATH_PARAMETER"))
    return out


def _apply_last_event_id(msg: message.Message, last_event_id: str | None) -> list[FieldViolation]:
    if last_event_id is None or RESUME_FIELD not in msg.DESCRIPTOR.fields_by_name:
        return []
    try:
        fields.set_from_strings(msg, [RESUME_FIELD], [last_event_id.strip()])
    except fields.BadValue as err:
        return [FieldViolation(LAST_EVENT_ID, str(err), "INVALID_HEADER")]
    return []


def response_json(msg: message.Message, response_body: str, options: JsonOptions) -> Any:
    """The JSON value of a response, or of its ``response_body`` field when the rule names one."""
    # Integral doubles print without a fraction, as Go's protojson (grpc-gateway) writes them:
    # a workflow Struct must come back as ["1", 0], not ["1", 0.0].
    as_dict = integral_floats_to_ints(
        json_format.MessageToDict(
            msg, always_print_fields_with_no_presence=options.emit_unpopulated
        )
    )
    if not response_body:
        return as_dict
    fd = msg.DESCRIPTOR.fields_by_name[response_body]
    default: Any = {} if fd.message_type is not None and not _repeated(fd) else None
    return as_dict.get(fd.json_name, default)


def _repeated(fd: fields.FD) -> bool:
    return bool(fd.is_repeated)


def sequence_of(msg: message.Message) -> int | None:
    """The ``sequence`` of a streamed message, used as the SSE event id, when it has one."""
    fd = msg.DESCRIPTOR.fields_by_name.get("sequence")
    if fd is None or fd.cpp_type not in _INTEGER_CPP_TYPES:
        return None
    return int(getattr(msg, fd.name))


_INTEGER_CPP_TYPES = {
    fields.FD.CPPTYPE_INT32,
    fields.FD.CPPTYPE_INT64,
    fields.FD.CPPTYPE_UINT32,
    fields.FD.CPPTYPE_UINT64,
}


def dumps(value: Any) -> bytes:
    """Compact JSON, as grpc-gateway writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
