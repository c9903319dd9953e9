"""Genericity: a method annotated in a proto compiled at test time is reachable with no new code.

The proto is compiled with grpc_tools.protoc into a descriptor set in a temp dir; nothing is
generated, no route is written. The gRPC side serves it with a generic handler built from the
same descriptors.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import google.api
import grpc
import grpc_tools
import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from services.gateway.rest import build_rest_app, serve_rest

PACKAGE = "comfyfleet_rest_generic.v1"
PROTO = """
syntax = "proto3";

package comfyfleet_rest_generic.v1;

import "google/api/annotations.proto";
import "google/protobuf/duration.proto";

// GreeterService exists only in this test.
service GreeterService {
  // Greets someone, by path or by body.
  rpc Greet(GreetRequest) returns (GreetReply) {
    option (google.api.http) = {
      get: "/v1/{name=people/*}:greet"
      additional_bindings {post: "/v1/greetings" body: "*"}
      additional_bindings {post: "/v1/greetings:text" body: "*" response_body: "text"}
    };
  }

  // Counts up to a number, one message at a time.
  rpc Count(CountRequest) returns (stream CountReply) {
    option (google.api.http) = {get: "/v1/counts/{upto}"};
  }
}

// Mood is how warmly to greet.
enum Mood {
  MOOD_UNSPECIFIED = 0;
  MOOD_WARM = 1;
}

// GreetRequest says whom to greet and how.
message GreetRequest {
  // Who, as "people/<id>".
  string name = 1;
  // How often.
  int32 times = 2;
  // How warmly.
  Mood mood = 3;
  // How long to take.
  google.protobuf.Duration pause = 4;
}

// GreetReply is the greeting.
message GreetReply {
  // The greeting's text.
  string text = 1;
}

// CountRequest says how far to count.
message CountRequest {
  // The last number.
  int32 upto = 1;
}

// CountReply is one number.
message CountReply {
  // The number.
  int32 n = 1;
  // The number again, as the event id.
  int64 sequence = 2;
}
"""


def _compile(tmp: Path) -> descriptor.FileDescriptor:
    (tmp / "greeter.proto").write_text(PROTO)
    out = tmp / "greeter.binpb"
    includes = [
        str(tmp),
        os.path.dirname(os.path.dirname(next(iter(google.api.__path__)))),
        os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"),
    ]
    args = ["protoc", *(f"-I{i}" for i in includes), f"--descriptor_set_out={out}", "greeter.proto"]
    assert protoc.main(args) == 0
    file_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName("greeter.proto")
    except KeyError:
        pool.Add(file_set.file[0])
        return pool.FindFileByName("greeter.proto")


def _generic_handler(file: descriptor.FileDescriptor) -> grpc.GenericRpcHandler:
    service = file.services_by_name["GreeterService"]
    greet, count = service.methods_by_name["Greet"], service.methods_by_name["Count"]
    classes = {
        m: (
            message_factory.GetMessageClass(m.input_type),
            message_factory.GetMessageClass(m.output_type),
        )
        for m in (greet, count)
    }

    async def on_greet(request: Any, context: grpc.aio.ServicerContext) -> Any:
        mood = "warmly " if request.mood == 1 else ""
        text = f"hello {mood}{request.name} x{request.times} after {request.pause.seconds}s"
        return classes[greet][1](text=text)

    async def on_count(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        for n in range(1, request.upto + 1):
            yield classes[count][1](n=n, sequence=n)

    def handler(method: descriptor.MethodDescriptor, fn: Any, kind: Any) -> grpc.RpcMethodHandler:
        request_cls, reply_cls = classes[method]
        return kind(
            fn,
            request_deserializer=request_cls.FromString,
            response_serializer=reply_cls.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        service.full_name,
        {
            "Greet": handler(greet, on_greet, grpc.unary_unary_rpc_method_handler),
            "Count": handler(count, on_count, grpc.unary_stream_rpc_method_handler),
        },
    )


@pytest.fixture
async def greeter_url(tmp_path: Path) -> AsyncIterator[str]:
    file = _compile(tmp_path)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_generic_handler(file)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        app = build_rest_app(f"127.0.0.1:{port}", [file])
        async with serve_rest("127.0.0.1:0", app) as rest:
            yield rest.url
    finally:
        await server.stop(None)


async def test_an_annotated_test_only_proto_is_served_without_new_code(greeter_url: str) -> None:
    async with aiohttp.ClientSession(base_url=greeter_url) as client:
        params = {"times": "2", "mood": "MOOD_WARM", "pause": "3s"}
        async with client.get("/v1/people/ada:greet", params=params) as response:
            assert response.status == 200
            assert await response.json() == {"text": "hello warmly people/ada x2 after 3s"}
        body = {"name": "people/bob", "times": 1}
        async with client.post("/v1/greetings", json=body) as response:
            assert await response.json() == {"text": "hello people/bob x1 after 0s"}
        async with client.post("/v1/greetings:text", json=body) as response:
            assert await response.json() == "hello people/bob x1 after 0s"
        async with client.get("/v1/counts/3", headers={"Accept": "text/event-stream"}) as response:
            text = await response.text()
        assert text.count("data: ") == 3
        assert "id: 3\n" in text
        async with client.get("/v1/people/ada:greet", params={"times": "x"}) as response:
            assert response.status == 400
        async with client.get("/v1/executions") as response:
            assert response.status == 404
