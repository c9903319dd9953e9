"""The OpenAPI document generated from routes and descriptors, and its HTML rendering."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.models.v1 import models_pb2
from comfyfleet.tenants.v1 import tenants_pb2
from comfyfleet.webhooks.v1 import webhooks_pb2
from services.gateway.rest.docs import render_docs
from services.gateway.rest.openapi import ERROR_SCHEMA, openapi_document
from services.gateway.rest.protodocs import load_comments
from services.gateway.rest.routing import resolve_services, routes_of
from tests.unit.rest import kitchen

PKG = kitchen.PACKAGE
COMMENTS = {
    f"{PKG}.KitchenService": "Kitchen keeps items.",
    f"{PKG}.KitchenService.GetItem": "Returns one item.\n\nAlso by shelf.",
    f"{PKG}.Item": "An item on a shelf.",
    f"{PKG}.Item.count": "How many there are.",
    f"{PKG}.Color": "A color.",
    f"{PKG}.Color.COLOR_RED": "Red <b>hot</b>.",
}
PUBLIC = [
    executions_pb2.DESCRIPTOR,
    tenants_pb2.DESCRIPTOR,
    webhooks_pb2.DESCRIPTOR,
    models_pb2.DESCRIPTOR,
]


def _kitchen() -> dict[str, Any]:
    return openapi_document(routes_of([kitchen.service()]), COMMENTS)


PUBLIC_COMMENTS = {
    "comfyfleet.executions.v1.Execution": "Execution is one submitted workflow.",
    "comfyfleet.executions.v1.Execution.id": "The execution's id, chosen by the platform.",
    "comfyfleet.executions.v1.ExecutionState.EXECUTION_STATE_QUEUED": "Accepted and waiting.",
}


def _public() -> dict[str, Any]:
    return openapi_document(routes_of(resolve_services(PUBLIC)), PUBLIC_COMMENTS)


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]  # type: ignore[no-any-return]


def _params(op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in op.get("parameters", [])}


def test_documents_are_valid_openapi_3() -> None:
    validate(_kitchen())
    validate(_public())


def test_one_operation_per_binding_named_like_grpc_gateway() -> None:
    paths = _kitchen()["paths"]
    assert paths["/v1/items/{id}"]["get"]["operationId"] == "KitchenService_GetItem"
    shelf = paths["/v1/shelves/{nested.name}/items/{id}"]["get"]
    assert shelf["operationId"] == "KitchenService_GetItem_2"
    assert shelf["summary"] == "Returns one item."
    assert shelf["description"] == "Also by shelf."
    # A custom HTTP method has no place in OpenAPI; the route still works.
    assert not any(":peek" in p for p in paths)


def test_multi_segment_variables_become_plain_parameters_with_their_pattern() -> None:
    op = _kitchen()["paths"]["/v1/{id}"]["get"]
    assert "Matches `files/**`" in _params(op)["id"]["description"]


def test_query_parameters_are_every_field_the_path_and_body_leave() -> None:
    doc = _kitchen()
    params = _params(doc["paths"]["/v1/items/{id}"]["get"])
    assert params["id"]["in"] == "path"
    assert params["count"] == {
        "name": "count",
        "in": "query",
        "schema": {"type": "integer", "format": "int32"},
        "description": "How many there are.",
    }
    assert params["big"]["schema"] == {"type": "string", "format": "int64"}
    assert params["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert params["tags"]["explode"] is True
    assert params["whenTime"]["schema"]["format"] == "date-time"
    assert params["maybeCount"]["schema"]["nullable"] is True
    assert "nested.inner.leaf" in params and "nested.name" in params
    # A map of scalars is one `labels[key]=value` parameter per entry (deepObject); repeated
    # messages cannot be written as query parameters.
    assert params["labels"] == {
        "name": "labels",
        "in": "query",
        "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        "style": "deepObject",
        "explode": True,
    }
    assert params["counts"]["schema"]["additionalProperties"] == {
        "type": "integer",
        "format": "int32",
    }
    assert "nesteds" not in params
    shelf = _params(doc["paths"]["/v1/shelves/{nested.name}/items/{id}"]["get"])
    assert shelf["nested.name"]["in"] == "path"
    assert "nested.inner.leaf" in shelf


def test_bodies() -> None:
    paths = _kitchen()["paths"]
    create = paths["/v1/items"]["post"]
    assert "parameters" not in create
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": f"#/components/schemas/{PKG}.Item"}
    tags = paths["/v1/items/{id}/tags"]["put"]
    assert tags["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    ok = tags["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"type": "array", "items": {"type": "string"}}
    assert "tags" not in _params(tags) and "count" in _params(tags)


def test_a_star_body_leaves_out_fields_bound_by_the_path() -> None:
    op = _public()["paths"]["/v1/webhooks/{id}:rotateSecret"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert "id" not in schema["properties"]
    assert "overlap" in schema["properties"]


def test_streams_document_both_forms_and_the_resume_header() -> None:
    op = _public()["paths"]["/v1/executions/{id}:watch"]["get"]
    content = op["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/event-stream"}
    line = content["application/json"]["schema"]["properties"]
    assert line["result"]["$ref"].endswith("WorkflowExecutionEvent")
    assert line["error"]["$ref"].endswith(ERROR_SCHEMA)
    assert _params(op)["Last-Event-ID"]["in"] == "header"


def test_errors_are_statuses_with_node_errors() -> None:
    doc = _public()
    op = doc["paths"]["/v1/executions"]["post"]
    for status in ("400", "401", "403", "404", "409", "413", "429", "500", "501", "503", "504"):
        assert op["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{ERROR_SCHEMA}"
        }
    # Only the statuses the API can answer with: no catch-all.
    assert "default" not in op["responses"]
    assert "Retry-After" in op["responses"]["429"]["headers"]
    error = _schema(doc, ERROR_SCHEMA)
    assert error["allOf"][0] == {"$ref": "#/components/schemas/google.rpc.Status"}
    assert "node_errors" in error["allOf"][1]["properties"]
    details = _schema(doc, "google.rpc.Status")["properties"]["details"]
    assert details["items"]["properties"]["@type"] == {"type": "string"}


def test_schemas_follow_the_proto3_json_mapping() -> None:
    doc = _public()
    execution = _schema(doc, "comfyfleet.executions.v1.Execution")
    props = execution["properties"]
    assert execution["description"] == "Execution is one submitted workflow."
    assert props["id"]["readOnly"] is True
    assert props["id"]["description"] == "The execution's id, chosen by the platform."
    assert props["createTime"]["format"] == "date-time"
    assert props["workflow"]["type"] == "object"
    assert props["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert props["lastSequence"]["type"] == "string"
    assert props["state"]["allOf"] == [
        {"$ref": "#/components/schemas/comfyfleet.executions.v1.ExecutionState"}
    ]
    assert _schema(doc, "comfyfleet.tenants.v1.Tenant")["required"] == ["name"]
    state = _schema(doc, "comfyfleet.executions.v1.ExecutionState")
    assert state["enum"][0] == "EXECUTION_STATE_UNSPECIFIED"
    assert state["description"] == "- EXECUTION_STATE_QUEUED: Accepted and waiting."
    create = _schema(doc, "comfyfleet.executions.v1.CreateExecutionRequest")["properties"]
    assert create["queueTimeout"]["pattern"].endswith("s$")


def test_the_document_is_deterministic() -> None:
    assert _public() == _public()


def test_docs_page_links_operations_and_schemas_and_escapes_text() -> None:
    page = render_docs(_kitchen())
    assert page.startswith("<!doctype html>")
    assert 'href="#op-KitchenService_GetItem_2"' in page
    assert f'id="schema-{PKG}.Item"' in page
    assert "Red &lt;b&gt;hot&lt;/b&gt;." in page
    assert "<b>hot" not in page
    assert 'href="openapi.json"' in page
    assert "<script" not in page


def test_the_execution_list_documents_its_label_filter() -> None:
    doc = openapi_document(routes_of(resolve_services(PUBLIC)), load_comments())
    params = _params(doc["paths"]["/v1/executions"]["get"])
    labels = params["labels"]
    assert (labels["in"], labels["style"], labels["explode"]) == ("query", "deepObject", True)
    assert "labels[env]=prod" in labels["description"]
    assert {"pageSize", "pageToken", "state"} <= set(params)
