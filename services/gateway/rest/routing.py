"""Routes read from the ``google.api.http`` options of gRPC methods, and the table that picks one.

Nothing here is written per method: every annotated method of the given services (and each of
its ``additional_bindings``) becomes a route, so annotating a method in a proto is all it takes
to reach it over REST.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pool

from services.gateway.rest import fields
from services.gateway.rest.pathtemplate import PathTemplate, TemplateError, parse

log = logging.getLogger(__name__)

ServiceRef: TypeAlias = str | descriptor.ServiceDescriptor | descriptor.FileDescriptor

ANY_METHOD = "*"


class RouteError(ValueError):
    """An http annotation that cannot be served as written."""


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one gRPC method."""

    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    method: descriptor.MethodDescriptor

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(v.field_path for v in self.template.variables)


@dataclass(frozen=True)
class Lookup:
    """What the table found: a route with its path values, or the methods the path allows."""

    route: Route | None = None
    variables: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        # Most specific first, so the first match is the one grpc-gateway users expect.
        self._ordered = sorted(self.routes, key=lambda r: r.template.rank, reverse=True)

    def lookup(self, http_method: str, raw_path: str) -> Lookup:
        """The route for ``http_method`` and ``raw_path``; no route and ``allowed`` otherwise."""
        allowed: list[str] = []
        for route in self._ordered:
            variables = route.template.match(raw_path)
            if variables is None:
                continue
            if route.http_method in (http_method, ANY_METHOD):
                return Lookup(route, variables)
            if route.http_method not in allowed:
                allowed.append(route.http_method)
        return Lookup(allowed=tuple(sorted(allowed)))


def resolve_services(refs: Iterable[ServiceRef]) -> list[descriptor.ServiceDescriptor]:
    """Service descriptors for full names (default pool), service or file descriptors."""
    out: list[descriptor.ServiceDescriptor] = []
    for ref in refs:
        if isinstance(ref, str):
            out.append(_find_service(ref))
        elif isinstance(ref, descriptor.FileDescriptor):
            out.extend(ref.services_by_name.values())
        else:
            out.append(ref)
    return out


def _find_service(name: str) -> descriptor.ServiceDescriptor:
    try:
        return descriptor_pool.Default().FindServiceByName(name)
    except KeyError:
        raise LookupError(
            f"service {name!r} is not in the default descriptor pool: import its *_pb2 module first"
        ) from None


def routes_of(services: Sequence[descriptor.ServiceDescriptor]) -> list[Route]:
    """Every HTTP binding of every annotated method; unannotated methods are not exposed."""
    routes: list[Route] = []
    for service in services:
        for method in service.methods:
            rule = http_rule(method)
            if rule is None:
                continue
            if method.client_streaming:
                log.warning("%s streams requests; REST does not expose it", method.full_name)
                continue
            for binding in [rule, *rule.additional_bindings]:
                routes.append(_route(method, binding))
    return routes


def http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    return options.Extensions[annotations_pb2.http]


def _route(method: descriptor.MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise RouteError(f"{method.full_name}: http rule has no method and path")
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = pattern.upper(), getattr(rule, pattern)
    try:
        template = parse(path)
    except TemplateError as err:
        raise RouteError(f"{method.full_name}: {err}") from err
    route = Route(verb, template, rule.body, rule.response_body, method)
    _check(route)
    return route


def _check(route: Route) -> None:
    """Refuses, at startup, annotations that name fields the messages do not have."""
    name = route.method.full_name
    request, response = route.method.input_type, route.method.output_type
    for path in route.path_fields:
        chain = fields.resolve(request, path.split("."))
        if chain is None or not fields.is_path_leaf(chain[-1]):
            raise RouteError(f"{name}: path variable {path!r} is not a singular scalar field")
    if route.body not in ("", "*") and request.fields_by_name.get(route.body) is None:
        raise RouteError(f"{name}: body field {route.body!r} is not a field of the request")
    if route.response_body and response.fields_by_name.get(route.response_body) is None:
        raise RouteError(f"{name}: response_body {route.response_body!r} is not a response field")
