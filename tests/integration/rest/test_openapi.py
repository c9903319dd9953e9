"""The OpenAPI document and docs page as served, and the committed proto comments being current."""

from __future__ import annotations

import aiohttp
from openapi_spec_validator import validate

from services.gateway.rest import build_rest_app, serve_rest
from services.gateway.rest.protodocs import COMMENTS_FILE, generate
from tests.integration.rest.conftest import PUBLIC_SERVICES, Stack


async def test_openapi_json_is_served_with_proto_comments(client: aiohttp.ClientSession) -> None:
    async with client.get("/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        document = await response.json()
    validate(document)
    create = document["paths"]["/v1/executions"]["post"]
    assert create["summary"].startswith("Validates a workflow")
    assert {"/v1/executions/{id}:cancel", "/v1/models:resolve"} <= set(document["paths"])


async def test_docs_page_is_served(client: aiohttp.ClientSession) -> None:
    async with client.get("/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert 'id="op-ExecutionService_CreateExecution"' in page
    assert "Validates a workflow" in page


async def test_documents_can_be_left_out(stack: Stack) -> None:
    app = build_rest_app(stack.grpc_target, PUBLIC_SERVICES, openapi=False)
    async with (
        serve_rest("127.0.0.1:0", app) as rest,
        aiohttp.ClientSession() as session,
        session.get(f"{rest.url}/openapi.json") as response,
    ):
        assert response.status == 404
        assert (await response.json())["code"] == 5


def test_committed_proto_comments_are_current() -> None:
    # Runs protoc over protos/; on failure: .venv/bin/python -m services.gateway.rest.protodocs
    assert COMMENTS_FILE.read_text() == generate(), (
        "services/gateway/rest/proto_comments.json is stale: "
        "run .venv/bin/python -m services.gateway.rest.protodocs"
    )
