"""Request messages built the same way for the blocking and the asyncio client."""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2, json_format

from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.models.v1 import models_pb2
from comfyfleet.tenants.v1 import tenants_pb2
from comfyfleet.webhooks.v1 import webhooks_pb2


@dataclass(frozen=True)
class Uploaded:
    """An input file already sent to a presigned URL (``upload_input``): named by its upload."""

    upload_id: str


# An input file: its bytes, a local path, an http(s) URL the platform downloads, or an upload.
InputSource = bytes | Path | str | Uploaded
Inputs = Mapping[str, InputSource]
Progress = Callable[[int, int], None]
CHUNK_BYTES = 1 << 20


def input_file(name: str, source: InputSource) -> executions_pb2.InputFile:
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if isinstance(source, Uploaded):
        return executions_pb2.InputFile(name=name, upload_id=source.upload_id, content_type=kind)
    if isinstance(source, str):
        if not source.startswith(("http://", "https://")):
            raise ValueError(
                f"input {name!r}: a str must be an http(s) URL; pass a Path for a file"
            )
        return executions_pb2.InputFile(name=name, url=source, content_type=kind)
    content = source.read_bytes() if isinstance(source, Path) else source
    return executions_pb2.InputFile(name=name, content=content, content_type=kind)


def create_request(
    workflow: Mapping[str, Any] | str,
    inputs: Inputs | None = None,
    *,
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
    request_id: str = "",
    max_attempts: int = 0,
    webhook_events: Sequence[str] = (),
    environment: str = "",
) -> executions_pb2.CreateExecutionRequest:
    """A CreateExecutionRequest; the workflow travels as JSON text so large ints survive.

    ``webhook_events`` picks which of the execution's events go to the tenant's webhooks
    (``"execution.succeeded"``, ``"execution.*"``); empty sends all a subscription wants.
    ``environment`` names the environment to run in; empty takes the tenant's default, then
    the platform's."""
    text = workflow if isinstance(workflow, str) else json.dumps(workflow)
    return executions_pb2.CreateExecutionRequest(
        workflow_json=text,
        inputs=[input_file(name, source) for name, source in (inputs or {}).items()],
        priority=priority,
        labels=dict(labels or {}),
        request_id=request_id,
        max_attempts=max_attempts,
        webhook_events=list(webhook_events),
        environment=environment,
    )


EnvironmentSpec = environments_pb2.Environment | Mapping[str, Any]


def environment_request(
    spec: EnvironmentSpec, *, name: str = "", request_id: str = ""
) -> environments_pb2.CreateEnvironmentRequest:
    """A CreateEnvironmentRequest from an Environment, or from a spec in the proto's field
    names (``engine``, ``comfyui_version``, ``custom_nodes`` [{name, source, revision}],
    ``python_packages``, ``apt_packages``, ``models`` [{folder, name, sha256}],
    ``description``: the executor's ``COMFYFLEET_ENVIRONMENT_SPEC`` file). ``name``
    overrides the spec's own. Raises ValueError for a spec that is not one."""
    if isinstance(spec, environments_pb2.Environment):
        environment = environments_pb2.Environment()
        environment.CopyFrom(spec)
    else:
        try:
            environment = json_format.ParseDict(dict(spec), environments_pb2.Environment())
        except json_format.ParseError as err:
            raise ValueError(f"not an environment spec: {err}") from None
    if name:
        environment.name = name
    return environments_pb2.CreateEnvironmentRequest(environment=environment, request_id=request_id)


def catalog_request(name: str) -> environments_pb2.GetEnvironmentCatalogRequest:
    """The catalog as the engine's exact JSON text (a Struct would turn every number into a
    double)."""
    return environments_pb2.GetEnvironmentCatalogRequest(
        name=name, view=environments_pb2.CATALOG_VIEW_JSON
    )


def object_info_of(catalog: environments_pb2.EnvironmentCatalog) -> dict[str, Any]:
    """The catalog's ``GET /object_info`` as a dict, whichever view it was asked in."""
    if catalog.object_info_json:
        found: dict[str, Any] = json.loads(catalog.object_info_json)
        return found
    return json_format.MessageToDict(catalog.object_info)


def default_environment_request(tenant_id: str, name: str) -> tenants_pb2.UpdateTenantRequest:
    """Sets (or with "" clears) the environment of a tenant's executions that name none."""
    return tenants_pb2.UpdateTenantRequest(
        tenant=tenants_pb2.Tenant(id=tenant_id, default_environment=name),
        update_mask=field_mask_pb2.FieldMask(paths=["default_environment"]),
    )


def needs_upload(source: InputSource, threshold_bytes: int) -> bool:
    """Whether a file is large enough to go by presigned PUT rather than inline."""
    if isinstance(source, Path):
        return source.stat().st_size > threshold_bytes
    return isinstance(source, bytes) and len(source) > threshold_bytes


def upload_request(
    source: Path | bytes, name: str, request_id: str = ""
) -> executions_pb2.CreateInputUploadRequest:
    """The upload's declaration: size and sha256 (read in chunks), so the platform can tell
    a complete upload from a broken one."""
    digest = hashlib.sha256()
    if isinstance(source, Path):
        with source.open("rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
        size = source.stat().st_size
    else:
        digest.update(source)
        size = len(source)
    return executions_pb2.CreateInputUploadRequest(
        name=name,
        size_bytes=size,
        sha256=digest.hexdigest(),
        content_type=mimetypes.guess_type(name)[0] or "",
        request_id=request_id,
    )


def upload_request_id(submit_request_id: str, name: str) -> str:
    """The request_id of an input's upload made for an idempotent submit: a retry of the
    submit then finds the same upload, so its request is the same as the first one."""
    if not submit_request_id:
        return ""
    key = json.dumps([submit_request_id, name]).encode()
    return "upload-" + hashlib.sha256(key).hexdigest()[:40]


def state_value(state: str | int | None) -> int:
    """ "succeeded", "SUCCEEDED" or EXECUTION_STATE_SUCCEEDED -> the enum number; None -> 0."""
    if state is None or isinstance(state, int):
        return state or 0
    name = state.upper()
    if not name.startswith("EXECUTION_STATE_"):
        name = "EXECUTION_STATE_" + name
    try:
        return executions_pb2.ExecutionState.Value(name)
    except ValueError:
        known = [
            n.removeprefix("EXECUTION_STATE_").lower()
            for n in executions_pb2.ExecutionState.keys()[1:]
        ]
        raise ValueError(f"unknown state {state!r}; one of: {', '.join(known)}") from None


def model_type(kind: str | int) -> int:
    """ "lora", "LORA" or MODEL_TYPE_LORA -> the enum number."""
    if isinstance(kind, int):
        return kind
    name = kind.upper().replace("-", "_")
    if not name.startswith("MODEL_TYPE_"):
        name = "MODEL_TYPE_" + name
    try:
        return models_pb2.ModelType.Value(name)
    except ValueError:
        known = [n.removeprefix("MODEL_TYPE_").lower() for n in models_pb2.ModelType.keys()[1:]]
        raise ValueError(f"unknown model type {kind!r}; one of: {', '.join(known)}") from None


def upload_requests(
    path: Path,
    kind: str | int,
    *,
    name: str = "",
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[models_pb2.UploadModelRequest]:
    """The upload stream: the model's description, then the file in chunks."""
    total = path.stat().st_size
    head = models_pb2.Model(name=name or path.name, type=model_type(kind))  # type: ignore[arg-type]
    yield models_pb2.UploadModelRequest(model=head)
    sent = 0
    with path.open("rb") as source:
        while chunk := source.read(chunk_bytes):
            sent += len(chunk)
            yield models_pb2.UploadModelRequest(chunk=chunk)
            if progress is not None:
                progress(sent, total)


def subscription_request(
    url: str, event_types: Sequence[str] = (), description: str = "", request_id: str = ""
) -> webhooks_pb2.CreateSubscriptionRequest:
    subscription = webhooks_pb2.Subscription(
        url=url, event_types=list(event_types), description=description
    )
    return webhooks_pb2.CreateSubscriptionRequest(subscription=subscription, request_id=request_id)
