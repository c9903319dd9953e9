"""An OpenAPI 3 document generated from the same routes and descriptors the transcoder serves.

It describes the API as grpc-gateway's generator would: one operation per HTTP binding
(``Service_Method``, ``_2`` for additional bindings), path and query parameters, the body,
schemas in the proto3 JSON mapping (lowerCamelCase names, 64-bit integers as strings,
well-known types in their JSON forms), ``google.rpc.Status`` errors, and proto comments
as descriptions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor
from google.rpc import status_pb2

from services.gateway.rest import fields
from services.gateway.rest.pathtemplate import PathTemplate, SegmentKind, Variable
from services.gateway.rest.routing import Route
from services.gateway.rest.transcode import RESUME_FIELD

FD = descriptor.FieldDescriptor
OPENAPI_VERSION = "3.0.3"
ERROR_SCHEMA = "comfyfleet.rest.Error"
_OPENAPI_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}
_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")

_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_SINT64: {"type": "string", "format": "int64"},
    FD.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FD.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "example": "30s",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths.",
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}


def openapi_document(
    routes: Sequence[Route],
    comments: Mapping[str, str],
    *,
    title: str = "comfyfleet",
    version: str = "v1",
) -> dict[str, Any]:
    """The whole document; deterministic for the same routes and comments."""
    builder = _Builder(comments)
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for route in routes:
        if route.http_method not in _OPENAPI_METHODS:
            continue
        count = seen[route.method.full_name] = seen.get(route.method.full_name, 0) + 1
        path = _VARIABLE.sub(r"{\1}", route.template.source)
        paths.setdefault(path, {})[route.http_method.lower()] = builder.operation(route, count)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "tags": builder.tags(routes),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "securitySchemes": _SECURITY_SCHEMES,
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
}


class _Builder:
    def __init__(self, comments: Mapping[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, dict[str, Any]] = {}

    def tags(self, routes: Sequence[Route]) -> list[dict[str, str]]:
        services = {
            r.method.containing_service.full_name: r.method.containing_service for r in routes
        }
        return [self._described({"name": s.name}, full) for full, s in sorted(services.items())]

    def operation(self, route: Route, binding: int) -> dict[str, Any]:
        method = route.method
        op_id = f"{method.containing_service.name}_{method.name}"
        summary, _, details = self.comments.get(method.full_name, method.name).partition("\n\n")
        operation: dict[str, Any] = {
            "operationId": op_id if binding == 1 else f"{op_id}_{binding}",
            "tags": [method.containing_service.name],
            "summary": summary.replace("\n", " "),
        }
        if details:
            operation["description"] = details
        parameters = self._path_parameters(route) + self._query_parameters(route)
        parameters += self._header_parameters(route)
        if parameters:
            operation["parameters"] = parameters
        if route.body:
            operation["requestBody"] = self._request_body(route)
        operation["responses"] = self._responses(route)
        return operation

    def _path_parameters(self, route: Route) -> list[dict[str, Any]]:
        out = []
        for variable in route.template.variables:
            fd = _field_at(route.method.input_type, variable.field_path)
            parameter = {"name": variable.field_path, "in": "path", "required": True}
            parameter["schema"] = self.field_schema(fd)
            pattern = _pattern(route.template, variable)
            text = self.comments.get(fd.full_name, "")
            if pattern:
                text = f"{text} Matches `{pattern}`.".strip()
            out.append(_with_description(parameter, text))
        return out

    def _query_parameters(self, route: Route) -> list[dict[str, Any]]:
        if route.body == "*":
            return []
        skip = {*route.path_fields, *([route.body] if route.body else [])}
        return self._query_fields(route.method.input_type, "", "", skip, frozenset())

    def _query_fields(
        self,
        message_type: descriptor.Descriptor,
        name_prefix: str,
        path_prefix: str,
        skip: set[str],
        visiting: frozenset[str],
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for fd in message_type.fields:
            path = path_prefix + fd.name
            kind = _query_kind(fd)
            if path in skip or kind == "skip":
                continue
            if kind == "walk":
                if fd.message_type.full_name not in visiting:
                    out += self._query_fields(
                        fd.message_type,
                        f"{name_prefix}{fd.json_name}.",
                        f"{path}.",
                        skip,
                        visiting | {message_type.full_name},
                    )
                continue
            parameter: dict[str, Any] = {"name": name_prefix + fd.json_name, "in": "query"}
            parameter["schema"] = self.field_schema(fd)
            if kind == "map":
                # One parameter per entry, `labels[env]=prod`: OpenAPI's deepObject style.
                parameter.update(style="deepObject", explode=True)
            elif fd.is_repeated:
                parameter.update(style="form", explode=True)
            out.append(_with_description(parameter, self.comments.get(fd.full_name, "")))
        return out

    def _header_parameters(self, route: Route) -> list[dict[str, Any]]:
        if not route.server_streaming or RESUME_FIELD not in route.method.input_type.fields_by_name:
            return []
        text = f"Resumes an event stream: taken as `{RESUME_FIELD}` (Server-Sent Events reconnects send it)."
        schema = {"type": "string"}
        return [{"name": "Last-Event-ID", "in": "header", "schema": schema, "description": text}]

    def _request_body(self, route: Route) -> dict[str, Any]:
        request = route.method.input_type
        if route.body == "*":
            direct = {p for p in route.path_fields if "." not in p}
            schema = self._without(request, direct) if direct else self.message_ref(request)
        else:
            schema = self.field_schema(request.fields_by_name[route.body])
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    def _without(self, message_type: descriptor.Descriptor, names: set[str]) -> dict[str, Any]:
        """The message's schema minus the fields the path already binds."""
        schema = self._message_schema(message_type)
        for fd in message_type.fields:
            if fd.name in names:
                schema["properties"].pop(fd.json_name, None)
                if fd.json_name in schema.get("required", []):
                    schema["required"].remove(fd.json_name)
        if not schema.get("required"):
            schema.pop("required", None)
        return schema

    def _responses(self, route: Route) -> dict[str, Any]:
        output = route.method.output_type
        schema = (
            self.field_schema(output.fields_by_name[route.response_body])
            if route.response_body
            else self.message_ref(output)
        )
        error = {"$ref": self._error_ref()}
        if not route.server_streaming:
            ok = {"description": "A successful response.", "content": _json(schema)}
            return {"200": ok, **_error_responses(error)}
        empty = {"description": "Server-Sent Events only: the stream ended without a message."}
        ok = self._stream_response(schema, error, output)
        return {"200": ok, "204": empty, **_error_responses(error)}

    def _stream_response(
        self, schema: dict[str, Any], error: dict[str, Any], output: descriptor.Descriptor
    ) -> dict[str, Any]:
        line = {"type": "object", "properties": {"result": schema, "error": error}}
        events = (
            f"Server-Sent Events (`Accept: text/event-stream`): each event's data is one "
            f"{output.name} as JSON, a failure is an `error` event with a Status."
        )
        if "sequence" in output.fields_by_name:
            events += " Each event's id is the message's `sequence`."
        return {
            "description": "A stream: newline-delimited JSON, one object per message, or " + events,
            "content": {
                "application/json": {"schema": line},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }

    def _error_ref(self) -> str:
        if ERROR_SCHEMA not in self.schemas:
            status = self.message_ref(status_pb2.Status.DESCRIPTOR)
            node_errors = {
                "type": "object",
                "additionalProperties": True,
                "description": "ComfyUI's node_errors, when a workflow failed validation.",
            }
            self.schemas[ERROR_SCHEMA] = {
                "description": "A google.rpc.Status; workflow validation errors add node_errors.",
                "allOf": [status, {"type": "object", "properties": {"node_errors": node_errors}}],
            }
        return f"#/components/schemas/{ERROR_SCHEMA}"

    def field_schema(self, fd: descriptor.FieldDescriptor) -> dict[str, Any]:
        """The JSON schema of a field, repeated and map fields included."""
        if fields.is_map(fd):
            value = fd.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        if fd.is_repeated:
            return {"type": "array", "items": self._single(fd)}
        return self._single(fd)

    def _single(self, fd: descriptor.FieldDescriptor) -> dict[str, Any]:
        if fd.type == FD.TYPE_ENUM:
            return self.enum_ref(fd.enum_type)
        if fd.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            return self.message_ref(fd.message_type)
        return dict(_SCALARS[fd.type])

    def message_ref(self, message_type: descriptor.Descriptor) -> dict[str, Any]:
        name = message_type.full_name
        if name in _WELL_KNOWN:
            return copy.deepcopy(_WELL_KNOWN[name])
        if name in fields.WRAPPERS:
            return {**self._single(message_type.fields_by_name["value"]), "nullable": True}
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder first: messages may refer to themselves
            self.schemas[name] = self._message_schema(message_type)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message_schema(self, message_type: descriptor.Descriptor) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for fd in message_type.fields:
            behaviors = set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])
            schema = self.field_schema(fd)
            if "$ref" in schema:
                # Siblings of $ref are ignored in OpenAPI 3.0, so descriptions go in allOf.
                schema = {"allOf": [schema]}
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(fd.json_name)
            properties[fd.json_name] = _with_description(
                schema, self.comments.get(fd.full_name, "")
            )
        schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        return self._described(schema, message_type.full_name)

    def enum_ref(self, enum_type: descriptor.EnumDescriptor) -> dict[str, Any]:
        name = enum_type.full_name
        if name not in self.schemas:
            values = [v.name for v in enum_type.values]
            lines = [self.comments.get(name, "")]
            lines += [
                f"- {v.name}: {self.comments[f'{name}.{v.name}']}"
                for v in enum_type.values
                if f"{name}.{v.name}" in self.comments
            ]
            schema = {"type": "string", "enum": values}
            self.schemas[name] = _with_description(schema, "\n".join(x for x in lines if x))
        return {"$ref": f"#/components/schemas/{name}"}

    def _described(self, schema: dict[str, Any], full_name: str) -> dict[str, Any]:
        return _with_description(schema, self.comments.get(full_name, ""))


def _with_description(schema: dict[str, Any], text: str) -> dict[str, Any]:
    if text:
        schema["description"] = text
    return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# Every status an error can have (grpc-gateway's code mapping, and 413 for a body over the
# limit), each documented, so a client and a conformance check know the whole set.
ERROR_STATUSES = {
    "400": "The request is invalid (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE); "
    "BadRequest details name each bad field.",
    "401": "No valid credentials (UNAUTHENTICATED).",
    "403": "The credentials lack a scope this method needs (PERMISSION_DENIED).",
    "404": "No such resource in the caller's tenant, or no such path (NOT_FOUND).",
    "409": "The resource exists already, or a concurrent change won (ALREADY_EXISTS, ABORTED).",
    "413": "The request body is larger than the gateway accepts (RESOURCE_EXHAUSTED).",
    "429": "A rate limit or quota was reached (RESOURCE_EXHAUSTED); retry after `Retry-After`.",
    "499": "The client cancelled the request (CANCELLED).",
    "500": "An internal error (INTERNAL, UNKNOWN, DATA_LOSS).",
    "501": "This path does not take this HTTP method, or the method is not implemented "
    "(UNIMPLEMENTED).",
    "503": "A service behind the gateway is unavailable (UNAVAILABLE); retry with backoff.",
    "504": "The deadline passed before the call finished (DEADLINE_EXCEEDED).",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying, from the status's RetryInfo.",
        "schema": {"type": "integer"},
    }
}


def _error_responses(error: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, text in ERROR_STATUSES.items():
        out[status] = {"description": text, "content": _json(error)}
        if status in ("429", "503"):
            out[status]["headers"] = _RETRY_AFTER
    return out


def _field_at(message_type: descriptor.Descriptor, path: str) -> descriptor.FieldDescriptor:
    fd = None
    current = message_type
    for name in path.split("."):
        fd = current.fields_by_name[name]
        current = fd.message_type
    assert fd is not None
    return fd


def _pattern(template: PathTemplate, variable: Variable) -> str:
    """The segments a variable matches, when more than the default single ``*``."""
    segments = template.segments[variable.start : variable.end]
    if len(segments) == 1 and segments[0].kind is SegmentKind.SINGLE:
        return ""
    names = {SegmentKind.SINGLE: "*", SegmentKind.MULTI: "**"}
    return "/".join(names.get(s.kind, s.literal) for s in segments)


def _query_kind(fd: descriptor.FieldDescriptor) -> str:
    """How a request field appears among query parameters, as the transcoder reads them.

    "param": one parameter (scalars, enums, repeated scalars, string-form well-known types);
    "map": a map whose values are such, one ``field[key]=value`` per entry;
    "walk": its fields appear as ``field.subfield``; "skip": not expressible in a query.
    """
    if fd.type != FD.TYPE_MESSAGE:
        return "param"
    if fields.is_map(fd):
        value = fd.message_type.fields_by_name["value"]
        return "skip" if _query_kind(value) != "param" else "map"
    if fields.is_scalar_message(fd):
        return "param"
    if fd.is_repeated or fields.is_well_known(fd):
        return "skip"
    return "walk"
