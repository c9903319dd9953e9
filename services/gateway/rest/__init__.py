"""The REST/JSON front of the gateway, transcoded from the protos' ``google.api.http`` options.

app = build_rest_app("127.0.0.1:50051", ["comfyfleet.executions.v1.ExecutionService"])
async with serve_rest("127.0.0.1:8080", app) as rest:
    ...
"""

from services.gateway.rest.app import RunningRest, build_rest_app, serve_rest
from services.gateway.rest.proxy import RestOptions
from services.gateway.rest.transcode import JsonOptions

__all__ = ["JsonOptions", "RestOptions", "RunningRest", "build_rest_app", "serve_rest"]
