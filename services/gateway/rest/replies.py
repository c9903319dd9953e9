"""Error responses: a ``google.rpc.Status`` JSON body under the mapped HTTP status."""

from __future__ import annotations

from aiohttp import web
from google.rpc import status_pb2
from multidict import CIMultiDict

from services.gateway.rest.status import http_status, retry_after, status_json
from services.gateway.rest.transcode import dumps

JSON = "application/json"


def error_response(
    status: status_pb2.Status,
    extra: list[tuple[str, str]] | None = None,
    *,
    http: int | None = None,
) -> web.Response:
    """The Status as grpc-gateway answers it, with Retry-After when it carries RetryInfo."""
    response_headers = CIMultiDict(extra or [])
    delay = retry_after(status)
    if delay is not None:
        response_headers["Retry-After"] = delay
    return web.Response(
        status=http or http_status(status.code),
        body=dumps(status_json(status)),
        content_type=JSON,
        headers=response_headers,
    )
