"""REST -> gRPC for unary methods: every verb and body mode of the public annotations, errors."""

from __future__ import annotations

from typing import Any

import aiohttp

from services.gateway.rest import RestOptions, build_rest_app, serve_rest
from tests.integration.rest.conftest import PUBLIC_SERVICES, Stack
from tests.integration.rest.servicers import NODE_ERRORS

BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


async def _json(response: aiohttp.ClientResponse) -> Any:
    assert response.content_type == "application/json"
    return await response.json()


def _detail(body: dict[str, Any], type_url: str) -> dict[str, Any]:
    return next(d for d in body["details"] if d["@type"] == type_url)


async def test_health(client: aiohttp.ClientSession) -> None:
    async with client.get("/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "SERVING"}


async def test_post_body_star_with_both_name_styles_and_forwarded_headers(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    body = {
        "workflow": {"3": {"class_type": "KSampler", "inputs": {"seed": 5}}},
        "priority": 7,
        "labels": {"team": "ml"},
        "request_id": "r-1",
        "queueTimeout": "30s",
        "inputs": [{"name": "a.png", "content": "iVBORw0K"}],
    }
    headers = {"Authorization": "Bearer cfk_x", "X-Api-Key": "cfk_y", "Idempotency-Key": "idem-1"}
    async with client.post("/v1/executions", json=body, headers=headers) as response:
        assert response.status == 200
        got = await _json(response)
    assert got["id"] == "e-created"
    assert got["state"] == "EXECUTION_STATE_QUEUED"
    assert got["workflow"] == body["workflow"]
    assert got["priority"] == 7
    assert got["labels"] == {"team": "ml"}
    assert got["requestId"] == "r-1"
    assert got["inputNames"] == ["a.png"]
    # Unpopulated fields are written, as grpc-gateway v2 does by default.
    assert got["attempt"] == 0
    assert got["outputs"] == []
    [call] = stack.recorder.calls
    assert call.request.queue_timeout.seconds == 30  # type: ignore[attr-defined]
    assert call.metadata["authorization"] == "Bearer cfk_x"
    assert call.metadata["x-api-key"] == "cfk_y"
    assert call.metadata["idempotency-key"] == "idem-1"
    assert call.metadata["x-forwarded-for"] == "127.0.0.1"


async def test_get_with_path_variable_and_response_metadata(
    client: aiohttp.ClientSession,
) -> None:
    async with client.get("/v1/executions/e-42") as response:
        assert response.status == 200
        got = await _json(response)
        assert response.headers["Grpc-Metadata-x-served-by"] == "test-servicer"
        assert response.headers["Grpc-Trailer-x-cost-usd"] == "0.25"
    assert got["id"] == "e-42"
    assert got["maxAttempts"] == 3
    assert got["createTime"] == "2023-11-14T22:13:20Z"


async def test_encoded_slashes_stay_inside_one_path_variable(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    async with client.get("/v1/executions/a%2Fb%20c") as response:
        assert (await _json(response))["id"] == "a/b c"


async def test_get_with_query_parameters(client: aiohttp.ClientSession, stack: Stack) -> None:
    params = [("page_size", "20"), ("pageToken", "abc"), ("state", "EXECUTION_STATE_RUNNING")]
    async with client.get("/v1/executions", params=params) as response:
        got = await _json(response)
    assert got["nextPageToken"] == "20/abc"
    assert [e["state"] for e in got["executions"]] == ["EXECUTION_STATE_RUNNING"] * 2
    async with client.get("/v1/executions", params={"state": "5"}) as response:
        got = await _json(response)
    assert got["executions"][0]["state"] == "EXECUTION_STATE_SUCCEEDED"


async def test_colon_verb_routes_next_to_the_path_variable(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    async with client.post("/v1/executions/e-7:cancel") as response:
        got = await _json(response)
    assert got == {**got, "id": "e-7", "state": "EXECUTION_STATE_CANCELLED"}
    async with client.post("/v1/tenants/t-1/apiKeys/k-1:revoke", json={}) as response:
        got = await _json(response)
    assert (got["id"], got["tenantId"]) == ("k-1", "t-1")
    assert stack.recorder.methods() == ["CancelExecution", "RevokeApiKey"]


async def test_post_body_field_with_query_for_the_rest(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    tenant = {"name": "acme", "maxConcurrency": 4}
    async with client.post("/v1/tenants", json=tenant, params={"requestId": "r-9"}) as response:
        got = await _json(response)
    assert got["id"] == "t-new"
    assert (got["name"], got["maxConcurrency"]) == ("acme", 4)
    assert stack.recorder.calls[0].request.request_id == "r-9"  # type: ignore[attr-defined]
    key = {"description": "ci", "scopes": ["executions:write"]}
    async with client.post("/v1/tenants/t-1/apiKeys", json=key) as response:
        got = await _json(response)
    assert got["secret"] == "cfk_secret"
    assert got["apiKey"]["scopes"] == ["executions:write"]
    assert got["apiKey"]["tenantId"] == "t-1"


async def test_patch_with_nested_path_variable_and_implied_update_mask(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    patch = {"description": "new", "eventTypes": ["execution.*"]}
    async with client.patch("/v1/webhooks/w-1", json=patch) as response:
        got = await _json(response)
    assert (got["id"], got["description"]) == ("w-1", "new")
    request = stack.recorder.calls[0].request
    assert sorted(request.update_mask.paths) == ["description", "event_types"]  # type: ignore[attr-defined]


async def test_delete_and_an_empty_response(client: aiohttp.ClientSession) -> None:
    async with client.delete("/v1/webhooks/w-1") as response:
        assert response.status == 200
        assert await _json(response) == {}


async def test_post_custom_verb_on_a_collection(client: aiohttp.ClientSession) -> None:
    body = {"workflow_json": '{"4": {}, "12": {}}'}
    async with client.post("/v1/models:resolve", json=body) as response:
        got = await _json(response)
    assert [m["nodeId"] for m in got["models"]] == ["12", "4"]


async def test_timestamps_in_the_body_and_enums_in_the_query(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    body = {"since": "2024-01-01T00:00:42Z"}
    async with client.post("/v1/webhooks/w-1/deliveries:recover", json=body) as response:
        got = await _json(response)
    assert got == {"recoveredCount": (1704067242 % 1000)}
    params = {"state": "DELIVERY_STATE_FAILED"}
    async with client.get("/v1/webhooks/w-1/deliveries", params=params) as response:
        got = await _json(response)
    assert got["deliveries"][0]["state"] == "DELIVERY_STATE_FAILED"
    assert got["deliveries"][0]["subscriptionId"] == "w-1"


async def test_unknown_path_is_404_with_a_status(client: aiohttp.ClientSession) -> None:
    async with client.get("/v1/nothing") as response:
        assert response.status == 404
        assert await _json(response) == {"code": 5, "message": "Not Found", "details": []}


async def test_wrong_method_is_501_unimplemented_as_in_grpc_gateway(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    async with client.put("/v1/executions/e-1") as response:
        assert response.status == 501
        assert response.headers["Allow"] == "GET"
        body = await _json(response)
    assert (body["code"], body["message"]) == (12, "Method Not Allowed")
    assert stack.recorder.calls == []


async def test_malformed_json_is_400_and_never_reaches_the_backend(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    headers = {"Content-Type": "application/json"}
    async with client.post("/v1/executions", data=b'{"priority": ', headers=headers) as response:
        assert response.status == 400
        body = await _json(response)
    assert body["code"] == 3
    [violation] = _detail(body, BAD_REQUEST)["fieldViolations"]
    assert "not valid JSON" in violation["description"]
    assert stack.recorder.calls == []


async def test_type_mismatch_is_400_naming_the_field(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    async with client.post("/v1/executions", json={"priority": "high"}) as response:
        assert response.status == 400
        body = await _json(response)
    [violation] = _detail(body, BAD_REQUEST)["fieldViolations"]
    assert violation["field"] == "priority"
    async with client.get("/v1/executions", params={"page_size": "lots"}) as response:
        assert response.status == 400
        body = await _json(response)
    assert _detail(body, BAD_REQUEST)["fieldViolations"][0]["field"] == "page_size"
    assert stack.recorder.calls == []


async def test_backend_validation_errors_keep_details_and_node_errors(
    client: aiohttp.ClientSession,
) -> None:
    async with client.post("/v1/executions", json={"workflowJson": "invalid"}) as response:
        assert response.status == 400
        body = await _json(response)
    assert body["code"] == 3
    assert body["message"] == "workflow validation failed"
    violations = _detail(body, BAD_REQUEST)["fieldViolations"]
    assert violations[0]["field"] == 'workflow["4"].inputs.ckpt_name'
    info = _detail(body, "type.googleapis.com/google.rpc.ErrorInfo")
    assert info["domain"] == "comfyfleet.dev"
    assert body["node_errors"] == NODE_ERRORS


async def test_backend_errors_map_to_http_statuses(client: aiohttp.ClientSession) -> None:
    expected = {"noauth": (401, 16), "forbidden": (403, 7), "missing": (404, 5), "boom": (500, 13)}
    for key, (http, code) in expected.items():
        async with client.get(f"/v1/executions/{key}") as response:
            assert response.status == http, key
            body = await _json(response)
        assert body["code"] == code
    assert body["message"] == "internal error"
    async with client.delete("/v1/webhooks/conflict") as response:
        assert response.status == 409
    async with client.post("/v1/executions/unavailable:cancel") as response:
        assert response.status == 503


async def test_a_response_json_cannot_express_is_a_500_status(
    client: aiohttp.ClientSession,
) -> None:
    async with client.get("/v1/executions/nan") as response:
        assert response.status == 500
        assert await _json(response) == {"code": 13, "message": "internal error", "details": []}


async def test_resource_exhausted_is_429_with_retry_after(client: aiohttp.ClientSession) -> None:
    async with client.get("/v1/executions/quota") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "8"
        body = await _json(response)
    types = {d["@type"] for d in body["details"]}
    assert "type.googleapis.com/google.rpc.RetryInfo" in types
    assert "type.googleapis.com/google.rpc.QuotaFailure" in types


async def test_grpc_timeout_sets_the_deadline(client: aiohttp.ClientSession) -> None:
    async with client.get("/v1/executions/slow", headers={"Grpc-Timeout": "100m"}) as response:
        assert response.status == 504
        assert (await _json(response))["code"] == 4
    async with client.get("/v1/executions/e", headers={"Grpc-Timeout": "soon"}) as response:
        assert response.status == 400


async def test_oversized_bodies_are_413_before_the_backend(stack: Stack) -> None:
    app = build_rest_app(
        stack.grpc_target, PUBLIC_SERVICES, options=RestOptions(max_body_bytes=1024)
    )
    stack.recorder.reset()
    payload = {"workflow_json": "x" * 4096}
    async with serve_rest("127.0.0.1:0", app) as rest, aiohttp.ClientSession() as session:
        async with session.post(f"{rest.url}/v1/executions", json=payload) as response:
            assert response.status == 413
            body = await _json(response)
        assert body["code"] == 8
        small = {"workflow_json": "{}"}
        async with session.post(f"{rest.url}/v1/executions", json=small) as response:
            assert response.status == 200
    assert stack.recorder.methods() == ["CreateExecution"]


async def test_chunked_bodies_are_limited_too(stack: Stack) -> None:
    app = build_rest_app(
        stack.grpc_target, PUBLIC_SERVICES, options=RestOptions(max_body_bytes=1024)
    )
    stack.recorder.reset()

    async def chunks() -> Any:
        for _ in range(8):
            yield b" " * 512

    async with (
        serve_rest("127.0.0.1:0", app) as rest,
        aiohttp.ClientSession() as session,
        session.post(f"{rest.url}/v1/executions", data=chunks()) as response,
    ):
        assert response.status == 413
    assert stack.recorder.calls == []
