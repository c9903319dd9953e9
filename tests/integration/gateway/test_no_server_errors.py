"""No request gets a server error (issue 11): whatever a client sends, the answer is a clear
INVALID_ARGUMENT (REST 400) or a success, never INTERNAL, UNKNOWN or another 5xx, and a
refused request stores nothing.

The property test drives the three forms of CreateExecution (gRPC ``workflow`` Struct, gRPC
``workflow_json``, the REST object) and the REST front's other routes with generated
workflows and mutations: deep nesting, huge integers, NaN and infinities, lone surrogates
(escaped in JSON, and raw in the wire bytes), NUL, long strings, long chains, too many
nodes, swapped types, unknown fields and wrong shapes. The platform is a real gateway,
scheduler and models service in this process. It runs a fixed sequence of examples
(``derandomize``); ``COMFYFLEET_FUZZ_EXAMPLES=5000`` runs that many random ones instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import string
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2
from services.gateway.rest.routing import Route, resolve_services, routes_of
from services.gateway.server import PUBLIC_SERVICES
from tests.integration.gateway.conftest import Metadata
from tests.integration.gateway.stack import (
    Deep,
    Platform,
    length_delimited,
    platform,
    start_models,
    struct_fields,
    tenant_key,
    text,
)

__all__ = ["platform", "start_models"]

CREATE = "/comfyfleet.executions.v1.ExecutionService/CreateExecution"
# CreateExecution's three forms: the gRPC Struct, gRPC JSON text, and the REST object.
FORMS = ("struct", "json", "rest")
# ResolveModels, the other method that takes a workflow (as JSON text).
RESOLVE = "/comfyfleet.models.v1.ModelService/ResolveModels"
UPLOAD = "/comfyfleet.models.v1.ModelService/UploadModel"
# The answers that mean the server failed, not the client.
SERVER_ERRORS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
EXAMPLES = int(os.environ.get("COMFYFLEET_FUZZ_EXAMPLES", "0"))
# Every request is answered well within this, the largest workflows included.
ANSWER_WITHIN_S = 30.0


def raw_call(platform: Platform, path: str) -> Callable[..., Any]:
    return platform.gw.channel.unary_unary(
        path, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def stored(platform: Platform, key: Metadata) -> int:
    stub = executions_pb2_grpc.ExecutionServiceStub(platform.gw.channel)
    count, token = 0, ""
    while True:
        page = await stub.ListExecutions(
            executions_pb2.ListExecutionsRequest(page_token=token), metadata=key
        )
        count += len(page.executions)
        token = page.next_page_token
        if not token:
            return count


async def test_requests_protobuf_cannot_parse_are_invalid_argument(platform: Platform) -> None:
    key, _ = await tenant_key(platform.gw, "undecodable")
    create = raw_call(platform, CREATE)
    bodies = [
        length_delimited(2, text('{"1": "\ud800"}')),  # workflow_json that is not UTF-8
        b"\xff\xff\xff",  # not protobuf
        length_delimited(2, b"ab")[:-1],  # cut short
        length_delimited(1, struct_fields({"1": Deep(80)})),  # a Struct deeper than protobuf reads
    ]
    for body in bodies:
        assert await code_of(create(body, metadata=key)) == grpc.StatusCode.INVALID_ARGUMENT
    # A client stream fails at its first undecodable message, and nothing is registered.
    upload = platform.gw.channel.stream_unary(
        UPLOAD, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    head = models_pb2.UploadModelRequest(model=models_pb2.Model(name="m.safetensors"))
    parts = [head.SerializeToString(), b"\xff\xff"]
    assert await code_of(upload(iter(parts), metadata=key)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await platform.models.row_count() == 0
    assert await stored(platform, key) == 0


async def test_a_rest_body_nested_too_deeply_to_read_is_400(platform: Platform) -> None:
    _, auth = await tenant_key(platform.gw, "deep-body")
    body = '{"labels": ' + "[" * 5000 + "]" * 5000 + "}"
    async with (
        aiohttp.ClientSession(platform.gw.rest_url, headers={"Authorization": auth}) as http,
        http.post("/v1/executions", data=body) as response,
    ):
        assert response.status == 400, await response.text()
        assert "nested too deeply" in (await response.json())["message"]


# ---------------------------------------------------------------------------------------
# The property test.

NAME = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=8)
BAD_TEXT = st.sampled_from(["\ud800", "a\udfffb", "\x00", "x\x00y", "\ud83d"])
HUGE_INT = st.one_of(
    st.integers(2**64, 2**300),
    st.integers(-(2**300), -(2**63) - 1),
    st.sampled_from([1e80, -1e308, 1.7976931348623157e308, 2.0**64]),
)
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(exclude_categories=()), max_size=12),
    BAD_TEXT,
)
JSON_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAME, inner, max_size=3),
    max_leaves=8,
)
# The depths that matter: within the limit, just over it, over protobuf's, over Python's.
DEPTH = st.sampled_from([5, 29, 30, 60, 120, 1200, 5000])


def empty_image() -> dict[str, Any]:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    }


def graph(kind: str, size: int) -> dict[str, Any]:
    """A valid workflow: a chain of ``size`` nodes, or one node with ``size`` outputs."""
    nodes: dict[str, Any] = {"1": empty_image()}
    for i in range(2, size):
        upstream = str(i - 1) if kind == "chain" else "1"
        save = {"class_type": "SaveImage", "inputs": {"images": [upstream, 0]}}
        invert = {"class_type": "ImageInvert", "inputs": {"image": [upstream, 0]}}
        nodes[str(i)] = invert if kind == "chain" else save
    nodes[str(max(size, 2))] = {
        "class_type": "SaveImage",
        "inputs": {"images": [str(max(size - 1, 1)), 0], "filename_prefix": "f"},
    }
    return nodes


def naming_a_model(name: str) -> dict[str, Any]:
    """A valid workflow whose loader (no output depends on it) names a model file."""
    loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}
    return {"9": loader, **graph("chain", 2)}


GRAPH = st.one_of(
    st.builds(graph, st.sampled_from(["chain", "wide"]), st.integers(1, 12)),
    st.builds(graph, st.sampled_from(["chain", "wide"]), st.sampled_from([400, 10_000, 10_001])),
    st.builds(naming_a_model, st.one_of(st.text(st.characters(exclude_categories=())), BAD_TEXT)),
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A workflow, then a few changes a careless or hostile client makes."""
    workflow: dict[str, Any] = draw(GRAPH)
    for _ in range(draw(st.integers(0, 3))):
        node_id = draw(st.sampled_from(sorted(workflow)))
        node = workflow[node_id]
        inputs = node.get("inputs") if isinstance(node, dict) else None
        what = draw(
            st.sampled_from(
                [
                    "value",
                    "deep",
                    "huge",
                    "not finite",
                    "bad text",
                    "long text",
                    "bad key",
                    "node shape",
                    "inputs shape",
                    "class",
                    "link",
                    "cycle",
                    "unknown field",
                ]
            )
        )
        inputs_named = [
            "width",
            "batch_size",
            "color",
            "images",
            "extra",
            "ckpt_name",
            "filename_prefix",
        ]
        name = draw(st.sampled_from(inputs_named))
        if what == "node shape":
            workflow[node_id] = draw(JSON_VALUE)
        elif what == "cycle":
            workflow["1"] = {"class_type": "ImageInvert", "inputs": {"image": [node_id, 0]}}
        elif not isinstance(node, dict):
            continue
        elif what == "class":
            node["class_type"] = draw(st.one_of(JSON_VALUE, st.just("NoSuchNode")))
        elif what == "unknown field":
            node[draw(NAME)] = draw(JSON_VALUE)
        elif what == "inputs shape":
            node["inputs"] = draw(JSON_VALUE)
        elif not isinstance(inputs, dict):
            continue
        elif what == "bad key":
            inputs[draw(BAD_TEXT)] = 1
        else:
            inputs[name] = draw(value_for(what, sorted(workflow)))
    return workflow


def value_for(what: str, node_ids: list[str]) -> st.SearchStrategy[Any]:
    return {
        "value": JSON_VALUE,
        "deep": st.builds(Deep, DEPTH),
        "huge": HUGE_INT,
        "not finite": NOT_FINITE,
        "bad text": BAD_TEXT,
        "long text": st.sampled_from([65_536, 65_537, 300_000]).map(lambda n: "s" * n),
        "link": st.tuples(
            st.one_of(st.sampled_from(node_ids), NAME, HUGE_INT, st.none()),
            st.one_of(st.integers(-3, 3), HUGE_INT, NOT_FINITE, st.just("0")),
        ).map(list),
    }[what]


def dumps(value: Any, *, escape: bool) -> str:
    """JSON text with NaN/Infinity as Python writes them, and Deep values spliced in;
    ``escape`` writes lone surrogates as \\ud800 escapes, else raw (not UTF-8 once sent)."""
    deep: list[Deep] = []

    def mark(item: Any) -> Any:
        if isinstance(item, Deep):
            deep.append(item)
            return f"@deep{len(deep) - 1}@"
        raise TypeError(item)

    written = json.dumps(value, ensure_ascii=escape, default=mark)
    for i, item in enumerate(deep):
        written = written.replace(f'"@deep{i}@"', item.json())
    return written


@dataclass
class Request:
    """One request to make, in one of the forms."""

    form: str
    workflow: Any
    escape: bool = True
    # REST only: the request fields besides the workflow, or a whole body of another shape.
    extra: dict[str, Any] = field(default_factory=dict)
    body: str | None = None


SWAPS = st.fixed_dictionaries(
    {},
    optional={
        "labels": st.one_of(JSON_VALUE, st.dictionaries(NAME, JSON_VALUE, max_size=2)),
        "priority": st.one_of(JSON_VALUE, HUGE_INT, st.integers(-1000, 1000)),
        "inputs": JSON_VALUE,
        "requestId": JSON_VALUE,
        "maxAttempts": JSON_VALUE,
        "timeout": JSON_VALUE,
        "environment": JSON_VALUE,
        "webhookEvents": JSON_VALUE,
        "workflowJson": JSON_VALUE,
        "unknownField": JSON_VALUE,
    },
)
RAW_BODIES = st.one_of(
    st.sampled_from(
        ['"a workflow"', "[1, 2]", "42", "null", "true", "", "{", '{"workflow": "text"}']
    ),
    JSON_VALUE.map(lambda v: dumps(v, escape=True)),
)
# Every REST route but the webhook service's (which this platform leaves out), and
# CreateExecution's, which the forms above drive (and whose successes are counted).
ROUTES = [
    r
    for r in routes_of(resolve_services(PUBLIC_SERVICES))
    if r.method.containing_service.name != "WebhookService" and r.method.name != "CreateExecution"
]


@st.composite
def route_bodies(draw: st.DrawFn, route: Route) -> dict[str, Any]:
    """A body of the route's request fields (or others) with values of any type."""
    names = [f.json_name for f in route.method.input_type.fields] + ["unknownField"]
    return draw(st.dictionaries(st.sampled_from(names), JSON_VALUE, max_size=4))


@st.composite
def route_calls(draw: st.DrawFn) -> Request:
    route = draw(st.sampled_from(ROUTES))
    body = draw(st.one_of(route_bodies(route), JSON_VALUE))
    path = route.template.source
    for name in route.path_fields:
        value = draw(st.one_of(NAME, JSON_VALUE.map(lambda v: dumps(v, escape=False))))
        path = path.replace("{" + name + "}", urllib.parse.quote(text(value), safe=""))
    return Request("route", body, draw(st.booleans()), {"method": route.http_method, "path": path})


REQUESTS = st.one_of(
    *(st.builds(Request, st.just(form), mutated(), st.booleans()) for form in FORMS),
    st.builds(Request, st.just("resolve"), mutated(), st.booleans()),
    st.builds(Request, st.just("rest"), mutated(), st.just(True), SWAPS),
    st.builds(Request, st.just("rest"), st.none(), st.just(True), st.just({}), RAW_BODIES),
    route_calls(),
)


@dataclass
class Outcome:
    accepted: int = 0
    answers: dict[str, int] = field(default_factory=dict)


async def send(platform: Platform, key: Metadata, auth: str, request: Request) -> str:
    """Makes the request; its answer as a gRPC code name or an HTTP status."""
    if request.form in ("struct", "json", "resolve"):
        method, number = (RESOLVE, 1) if request.form == "resolve" else (CREATE, 2)
        if request.form == "struct":
            payload = length_delimited(1, struct_fields(request.workflow))
        else:
            written = text(dumps(request.workflow, escape=request.escape))
            payload = length_delimited(number, written)
        code = await code_of(raw_call(platform, method)(payload, metadata=key))
        assert code not in SERVER_ERRORS, (code, request)
        return code.name
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(platform.gw.rest_url, headers=headers) as http:
        if request.form == "route":
            return await route_call(http, request)
        body = request.body
        if body is None:
            body = dumps({"workflow": request.workflow, **request.extra}, escape=request.escape)
        async with http.post("/v1/executions", data=text(body)) as response:
            answer = await response.text()
            assert response.status < 500, (response.status, answer, request)
            return str(response.status)


async def route_call(http: aiohttp.ClientSession, request: Request) -> str:
    """Any route, with generated path values and body (a stream is read for a second)."""
    data = text(dumps(request.workflow, escape=request.escape))
    method, path = request.extra["method"], request.extra["path"]
    timeout = aiohttp.ClientTimeout(total=5)
    async with http.request(method, path, data=data, timeout=timeout) as response:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(response.read(), 1.0)
        assert response.status < 500, (response.status, request)
        return str(response.status)


FUZZ = settings(
    max_examples=EXAMPLES or 60,
    derandomize=not EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


async def test_no_generated_request_gets_a_server_error(platform: Platform) -> None:
    key, auth = await tenant_key(platform.gw, "fuzzed")
    loop = asyncio.get_running_loop()
    outcome = Outcome()

    @FUZZ
    @given(REQUESTS)
    def one(request: Request) -> None:
        sent = asyncio.run_coroutine_threadsafe(send(platform, key, auth, request), loop)
        try:
            answer = sent.result(timeout=ANSWER_WITHIN_S)
        except TimeoutError:
            sent.cancel()
            raise AssertionError(f"no answer in {ANSWER_WITHIN_S} s to {request!r:.3000}") from None
        tally = f"{request.form} {answer}"
        outcome.answers[tally] = outcome.answers.get(tally, 0) + 1
        if answer in ("OK", "200") and request.form in FORMS:
            outcome.accepted += 1

    # Hypothesis runs in a thread, so that this loop serves the platform meanwhile.
    await asyncio.to_thread(one)
    print("answers:", dict(sorted(outcome.answers.items())))
    # What was refused stored nothing: the tenant holds exactly the accepted executions.
    assert await stored(platform, key) == outcome.accepted
