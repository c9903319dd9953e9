"""The REST/JSON front of the gateway, transcoded from the protos' ``google.api.http`` options.

    app = build_rest_app("127.0.0.1:50051", ["comfyfleet.executions.v1.ExecutionService"])
    async with serve_rest("127.0.0.1:8080", app) as rest:
        ...

Like grpc-gateway's reverse proxy, every HTTP request becomes one gRPC call to ``grpc_target``
(the gateway's own gRPC server), made generically from the descriptors: annotating a method
is all it takes to expose it. Behaviour, and where it follows or leaves grpc-gateway v2:

- Routing: every binding and ``additional_bindings``; ``{field}``, ``{a.b}``,
  ``{name=things/*}``, ``**`` and ``:verb``. When several templates match, literal segments
  win over variables left to right, then a template with a verb wins. An unknown path is 404
  NOT_FOUND; a known path with another method is **501 UNIMPLEMENTED "Method Not Allowed"**,
  as grpc-gateway answers (plus an ``Allow`` header). A variable never matches an empty segment.
- Fields: ``body: "*"`` fills the message, ``body: "<field>"`` one field; query parameters fill
  the rest (``a.b``, repeated keys, ``map[key]=v``, enums by name or number, well-known types in
  their JSON form; unknown names ignored); path variables win. A PATCH with a body field and
  an empty ``update_mask`` gets the mask of the fields the body sets (grpc-gateway's feature).
  ``Last-Event-ID`` fills a top-level ``after_sequence`` field.
- JSON: the proto3 mapping; both field name styles in; lowerCamelCase out with unpopulated
  fields written and unknown body fields (and unknown enum names) dropped, which are
  grpc-gateway v2's defaults (``JsonOptions`` changes both). Bad JSON or a type mismatch is
  400 INVALID_ARGUMENT with BadRequest field violations, without calling the backend. A body
  over ``RestOptions.max_body_bytes`` is 413 RESOURCE_EXHAUSTED before it is read in full.
- Errors: grpc-gateway's code -> HTTP mapping (CANCELLED is 499), a ``google.rpc.Status`` body
  with typed details, ``Retry-After`` from RetryInfo, and ComfyUI's ``node_errors`` lifted to
  the top when ErrorInfo carries ``comfyui_node_errors``.
- Headers: ``Authorization``, ``X-Api-Key``, ``Idempotency-Key`` and ``Grpc-Metadata-*`` go out
  as metadata (never the internal tenant key), with ``x-forwarded-for``; ``Grpc-Timeout`` sets
  the deadline. Response metadata comes back as ``Grpc-Metadata-*``, trailers as
  ``Grpc-Trailer-*`` headers.
- Streams: Server-Sent Events for ``Accept: text/event-stream`` (``id:`` from ``sequence``,
  keepalive comments, ``event: error`` on failure, 204 for an empty stream), else
  grpc-gateway's newline-delimited ``{"result": ...}`` / ``{"error": ...}``. A stream that
  fails before its first message is an ordinary error response. A client that goes away
  cancels its call; shutdown ends open streams with UNAVAILABLE.
- Tracing: every transcoded request is a SERVER span named by its route (``POST
  /v1/executions``) that continues a W3C ``traceparent``/``tracestate`` given in the request
  headers, so the gRPC call it makes joins the caller's trace; the response carries the
  span's own ``traceparent`` (when traces are recorded).
- ``GET /health`` (liveness), ``GET /openapi.json`` and ``GET /docs`` (with ``openapi=True``).
"""

from services.gateway.rest.app import RunningRest, build_rest_app, serve_rest
from services.gateway.rest.proxy import RestOptions
from services.gateway.rest.transcode import JsonOptions

__all__ = ["JsonOptions", "RestOptions", "RunningRest", "build_rest_app", "serve_rest"]
