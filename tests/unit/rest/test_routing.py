"""Routes come from the protos' http annotations; the table picks one or says what is allowed."""

from __future__ import annotations

import hashlib

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, text_format

from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.models.v1 import models_pb2
from comfyfleet.tenants.v1 import tenants_pb2
from comfyfleet.webhooks.v1 import webhooks_pb2
from services.gateway.rest.routing import (
    RouteError,
    RouteTable,
    resolve_services,
    routes_of,
)
from tests.unit.rest import kitchen

PUBLIC = [
    "comfyfleet.executions.v1.ExecutionService",
    "comfyfleet.tenants.v1.TenantService",
    "comfyfleet.webhooks.v1.WebhookService",
    "comfyfleet.models.v1.ModelService",
]
TABLE = RouteTable(routes_of(resolve_services(PUBLIC)))


@pytest.mark.parametrize(
    ("verb", "path", "method", "variables"),
    [
        ("POST", "/v1/executions", "CreateExecution", {}),
        ("GET", "/v1/executions", "ListExecutions", {}),
        ("GET", "/v1/executions/e1", "GetExecution", {"id": "e1"}),
        ("POST", "/v1/executions/e1:cancel", "CancelExecution", {"id": "e1"}),
        ("GET", "/v1/executions/e1:watch", "WatchExecution", {"id": "e1"}),
        (
            "POST",
            "/v1/tenants/t1/apiKeys/k1:revoke",
            "RevokeApiKey",
            {"tenant_id": "t1", "id": "k1"},
        ),
        ("PATCH", "/v1/webhooks/w1", "UpdateSubscription", {"subscription.id": "w1"}),
        ("DELETE", "/v1/webhooks/w1", "DeleteSubscription", {"id": "w1"}),
        ("POST", "/v1/models:resolve", "ResolveModels", {}),
        ("DELETE", "/v1/models/m1", "DeleteModel", {"id": "m1"}),
    ],
)
def test_public_annotations_route_to_their_methods(
    verb: str, path: str, method: str, variables: dict[str, str]
) -> None:
    found = TABLE.lookup(verb, path)
    assert found.route is not None
    assert found.route.method.name == method
    assert found.variables == variables
    assert found.route.grpc_path.endswith(f"/{method}")


def test_every_annotated_public_method_has_a_route() -> None:
    files = [executions_pb2, tenants_pb2, webhooks_pb2, models_pb2]
    annotated = {
        m.full_name
        for f in files
        for s in f.DESCRIPTOR.services_by_name.values()
        for m in s.methods
        if m.GetOptions().ListFields()
    }
    assert annotated == {r.method.full_name for r in TABLE.routes}
    # UploadModel streams requests and has no annotation: it stays gRPC-only.
    assert "comfyfleet.models.v1.ModelService.UploadModel" not in annotated


def test_an_unknown_path_finds_nothing_and_allows_nothing() -> None:
    found = TABLE.lookup("GET", "/v1/nothing/here")
    assert found.route is None
    assert found.allowed == ()


def test_a_known_path_with_another_method_lists_the_allowed_ones() -> None:
    found = TABLE.lookup("PUT", "/v1/webhooks/w1")
    assert found.route is None
    assert found.allowed == ("DELETE", "GET", "PATCH")
    assert TABLE.lookup("GET", "/v1/models:resolve").allowed == ("POST",)


def test_an_unimported_service_name_says_what_to_do() -> None:
    with pytest.raises(LookupError, match="import its"):
        resolve_services(["comfyfleet.nothing.v1.NoService"])


def test_file_descriptors_and_service_descriptors_are_accepted() -> None:
    by_file = resolve_services([executions_pb2.DESCRIPTOR])
    by_service = resolve_services([executions_pb2.DESCRIPTOR.services_by_name["ExecutionService"]])
    assert [s.full_name for s in by_file] == [s.full_name for s in by_service]


def test_additional_bindings_and_custom_methods() -> None:
    table = RouteTable(routes_of([kitchen.service()]))
    assert table.lookup("GET", "/v1/shelves/s/items/i").route.method.name == "GetItem"  # type: ignore[union-attr]
    assert table.lookup("GET", "/v1/items/i").route.method.name == "GetItem"  # type: ignore[union-attr]
    assert table.lookup("SEARCH", "/v1/items/i:peek").route.method.name == "PeekItem"  # type: ignore[union-attr]
    assert "Unannotated" not in {r.method.name for r in table.routes}


def _broken_service(rule: str) -> descriptor_pb2.FileDescriptorProto:
    kitchen.file_descriptor()
    tag = hashlib.sha256(rule.encode()).hexdigest()[:10]
    text = f"""
        name: "comfyfleet_rest_test/broken/b{tag}.proto"
        package: "comfyfleet_rest_test.broken.b{tag}" syntax: "proto3"
        dependency: "google/api/annotations.proto" dependency: "{kitchen.FILE}"
        service {{ name: "Broken" method {{
          name: "Do" input_type: ".{kitchen.PACKAGE}.Item" output_type: ".{kitchen.PACKAGE}.Item"
          options {{ [google.api.http] {{ {rule} }} }}
        }} }}
    """
    return text_format.Parse(text, descriptor_pb2.FileDescriptorProto())


@pytest.mark.parametrize(
    "rule",
    [
        'get: "/v1/items/{nope}"',
        'get: "/v1/items/{tags}"',
        'get: "/v1/items/{nested}"',
        'post: "/v1/items" body: "nope"',
        'get: "/v1/items" response_body: "nope"',
        'get: "/v1/{id"',
    ],
)
def test_annotations_naming_missing_fields_fail_at_startup(rule: str) -> None:
    proto = _broken_service(rule)
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName(proto.name)
    except KeyError:
        pool.Add(proto)
        file = pool.FindFileByName(proto.name)
    with pytest.raises(RouteError):
        routes_of(list(file.services_by_name.values()))
