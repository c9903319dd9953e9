"""Server streaming over REST: SSE with Last-Event-ID resume, NDJSON, errors, disconnects."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from services.gateway.rest import build_rest_app, serve_rest
from tests.integration.rest.conftest import PUBLIC_SERVICES, Stack
from tests.integration.rest.servicers import EVENTS_PER_WATCH
from tests.support.eventually import eventually

SSE = {"Accept": "text/event-stream"}


@dataclass
class Event:
    id: str | None
    event: str | None
    data: Any


async def _next_event(response: aiohttp.ClientResponse) -> Event | None:
    """One SSE event; keepalive comments are skipped; None at the end of the stream."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if fields:
                data = json.loads(fields["data"])
                return Event(fields.get("id"), fields.get("event"), data)
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    return None


async def _all_events(response: aiohttp.ClientResponse) -> list[Event]:
    events = []
    while (event := await _next_event(response)) is not None:
        events.append(event)
    return events


async def test_sse_events_carry_the_sequence_as_id(client: aiohttp.ClientSession) -> None:
    async with client.get("/v1/executions/e-1:watch", headers=SSE) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        events = await _all_events(response)
    assert [e.id for e in events] == ["1", "2", "3"]
    assert [e.data["sequence"] for e in events] == ["1", "2", "3"]
    assert events[0].data["eventType"] == "execution.progress"
    assert events[0].data["executionId"] == "e-1"
    assert all(e.event is None for e in events)


async def test_last_event_id_resumes_after_that_sequence(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    headers = {**SSE, "Last-Event-ID": "2"}
    async with client.get("/v1/executions/e-1:watch", headers=headers) as response:
        events = await _all_events(response)
    assert [e.id for e in events] == ["3"]
    assert stack.recorder.calls[0].request.after_sequence == 2  # type: ignore[attr-defined]


async def test_resuming_a_finished_stream_tells_event_source_to_stop(
    client: aiohttp.ClientSession,
) -> None:
    headers = {**SSE, "Last-Event-ID": str(EVENTS_PER_WATCH)}
    async with client.get("/v1/executions/e-1:watch", headers=headers) as response:
        assert response.status == 204


async def test_a_bad_last_event_id_is_400_before_the_backend(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    headers = {**SSE, "Last-Event-ID": "not-a-number"}
    async with client.get("/v1/executions/e-1:watch", headers=headers) as response:
        assert response.status == 400
        body = await response.json()
    [bad_request] = [d for d in body["details"] if "fieldViolations" in d]
    assert bad_request["fieldViolations"][0]["field"] == "Last-Event-ID"
    assert stack.recorder.calls == []


async def test_a_stream_that_fails_at_once_is_an_ordinary_error(
    client: aiohttp.ClientSession,
) -> None:
    async with client.get("/v1/executions/missing:watch", headers=SSE) as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        assert (await response.json())["code"] == 5
    async with client.get("/v1/executions/quota:watch") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "8"


async def test_sse_failure_midway_is_an_error_event(client: aiohttp.ClientSession) -> None:
    async with client.get("/v1/executions/fail-midway:watch", headers=SSE) as response:
        assert response.status == 200
        events = await _all_events(response)
    assert [e.event for e in events] == [None, "error"]
    assert events[1].data["code"] == 14
    assert events[1].data["message"] == "the event stream broke"


async def test_a_message_json_cannot_express_ends_the_stream_with_internal(
    client: aiohttp.ClientSession,
) -> None:
    async with client.get("/v1/executions/unwritable:watch", headers=SSE) as response:
        events = await _all_events(response)
    assert [e.event for e in events] == [None, "error"]
    assert events[1].data == {"code": 13, "message": "internal error", "details": []}


async def test_ndjson_results_and_the_after_sequence_query(client: aiohttp.ClientSession) -> None:
    params = {"afterSequence": "1"}
    async with client.get("/v1/executions/e-2:watch", params=params) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        lines = [json.loads(line) async for line in response.content if line.strip()]
    assert [line["result"]["sequence"] for line in lines] == ["2", "3"]


async def test_ndjson_failure_midway_is_an_error_line(client: aiohttp.ClientSession) -> None:
    async with client.get("/v1/executions/fail-midway:watch") as response:
        lines = [json.loads(line) async for line in response.content if line.strip()]
    assert "result" in lines[0]
    assert lines[1]["error"]["code"] == 14
    assert lines[1]["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"


async def test_silence_is_filled_with_keepalive_comments(client: aiohttp.ClientSession) -> None:
    async with client.get("/v1/executions/hold:watch", headers=SSE) as response:
        seen: list[str] = []
        async for raw in response.content:
            seen.append(raw.decode().strip())
            if ": keepalive" in seen:
                break
    assert "data: " in "".join(seen)


async def test_client_disconnect_cancels_the_grpc_call(
    client: aiohttp.ClientSession, stack: Stack
) -> None:
    watch = f"hold-{uuid.uuid4().hex}"
    async with client.get(f"/v1/executions/{watch}:watch", headers=SSE) as response:
        first = await _next_event(response)
        assert first is not None and first.id == "1"
        assert watch not in stack.recorder.cancelled_watches
        response.close()

    async def cancelled() -> None:
        assert watch in stack.recorder.cancelled_watches

    await eventually(cancelled)


async def test_shutdown_ends_open_streams_with_unavailable(stack: Stack) -> None:
    app = build_rest_app(stack.grpc_target, PUBLIC_SERVICES)
    watch = f"hold-{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as session:
        async with serve_rest("127.0.0.1:0", app) as rest:
            response = await session.get(f"{rest.url}/v1/executions/{watch}:watch", headers=SSE)
            for _ in range(EVENTS_PER_WATCH):
                assert await _next_event(response) is not None
        # The server has stopped; what it sent before closing is still readable.
        rest_of_stream = await _all_events(response)
        response.close()
    assert [e.event for e in rest_of_stream] == ["error"]
    assert rest_of_stream[0].data["code"] == 14

    async def cancelled() -> None:
        assert watch in stack.recorder.cancelled_watches

    await eventually(cancelled)
