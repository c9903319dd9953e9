"""Property tests: whatever an HTTP client sends, the transcoder builds a request message or
refuses with INVALID_ARGUMENT and field violations; it never fails another way."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import comfyfleet.executions.v1.executions_pb2
import comfyfleet.models.v1.models_pb2
import comfyfleet.tenants.v1.tenants_pb2
import comfyfleet.webhooks.v1.webhooks_pb2  # noqa: F401  (the public services' descriptors)
from comfyfleet.common.errors import InvalidArgument
from services.gateway.rest.routing import RouteTable, resolve_services, routes_of
from services.gateway.rest.transcode import HttpInput, JsonOptions, build_request
from services.gateway.server import PUBLIC_SERVICES

ROUTES = routes_of(resolve_services(PUBLIC_SERVICES))
TABLE = RouteTable(ROUTES)
SETTINGS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def field_names(route_index: int) -> list[str]:
    """The request's JSON names, so generated bodies hit real fields, not only unknown ones."""
    descriptor = ROUTES[route_index].method.input_type
    return [f.json_name for f in descriptor.fields] + [f.name for f in descriptor.fields]


@st.composite
def bodies(draw: Any, route_index: int) -> bytes:
    shaped = st.dictionaries(name_or_text(route_index, 8), json_values, max_size=6)
    value = draw(shaped | json_values)
    raw = json.dumps(value, allow_nan=True).encode()
    return draw(st.just(raw) | st.binary(max_size=40) | st.just(raw[: max(1, len(raw) // 2)]))


def name_or_text(route_index: int, max_size: int) -> st.SearchStrategy[str]:
    """A field name of the route's request, or any text; any text alone for empty requests."""
    names = field_names(route_index)
    text = st.text(max_size=max_size)
    return st.sampled_from(names) | text if names else text


@st.composite
def http_inputs(draw: Any) -> tuple[int, HttpInput]:
    index = draw(st.integers(0, len(ROUTES) - 1))
    route = ROUTES[index]
    variables = {v.field_path: draw(st.text(max_size=16)) for v in route.template.variables}
    keys = name_or_text(index, 10)
    query = draw(
        st.dictionaries(keys, st.lists(st.text(max_size=12), min_size=1, max_size=3), max_size=4)
    )
    last_event_id = draw(st.none() | st.text(max_size=12))
    body = draw(bodies(index)) if route.body else b""
    return index, HttpInput(variables, query, body, last_event_id)


@SETTINGS
@given(http_inputs(), st.booleans())
def test_any_request_transcodes_or_is_refused_with_field_violations(
    generated: tuple[int, HttpInput], discard_unknown: bool
) -> None:
    index, given_input = generated
    route = ROUTES[index]
    options = JsonOptions(discard_unknown=discard_unknown)
    try:
        msg = build_request(route, given_input, options)
    except InvalidArgument as err:
        assert err.violations, err.message
        assert err.message.startswith("invalid request")
        return
    assert msg.DESCRIPTOR is route.method.input_type
    # What was built travels: it serializes and parses back to itself.
    assert type(msg).FromString(msg.SerializeToString()) == msg


@SETTINGS
@given(st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]), st.text(max_size=60))
def test_any_path_finds_a_route_or_says_which_methods_it_allows(method: str, raw: str) -> None:
    found = TABLE.lookup(method, "/" + raw)
    if found.route is not None:
        assert found.route.http_method == method
        assert set(found.variables) == set(found.route.path_fields)
    else:
        assert method not in found.allowed
