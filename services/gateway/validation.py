"""Checking a submitted workflow before anything is stored."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, struct_pb2

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.workflow.specs import NodeCatalog
from comfyfleet.workflow.validate import validate_workflow

COMFYUI_NODE_ERRORS = "comfyui_node_errors"
COMFYUI_ERROR = "comfyui_error"


def workflow_text(workflow_json: str, workflow: struct_pb2.Struct | None) -> str:
    """The workflow as JSON text: ``workflow_json`` when given, else the Struct's JSON."""
    if workflow_json:
        return workflow_json
    if workflow is None or not workflow.fields:
        raise InvalidArgument(
            "no workflow",
            [FieldViolation("workflow", "send the workflow (or workflow_json) in API format")],
        )
    return json.dumps(_integral_floats_to_ints(json_format.MessageToDict(workflow)))


def _integral_floats_to_ints(value: Any) -> Any:
    """Struct numbers are doubles: 64 arrives as 64.0, which ComfyUI would show as a float."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_to_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_to_ints(v) for v in value]
    return value


def check_workflow(text: str, catalog: NodeCatalog) -> None:
    """Raises INVALID_ARGUMENT naming every problem of every node, as ComfyUI would.

    Unlike ComfyUI, which runs the valid outputs of a partly valid prompt, the API refuses
    a workflow with any node error: a caller should not get fewer outputs than it asked for
    without noticing.
    """
    result = validate_workflow(text, catalog)
    issues = result.issues
    if not issues:
        return
    body = result.comfy_body()
    metadata = {COMFYUI_NODE_ERRORS: json.dumps(body.get("node_errors", {}))}
    if "error" in body:
        metadata[COMFYUI_ERROR] = json.dumps(body["error"])
    message = issues[0].message if result.error is None else result.error.message
    raise InvalidArgument(
        f"the workflow is not valid: {message}",
        [FieldViolation(v.field, v.description, v.reason) for v in result.field_violations()],
        reason="INVALID_WORKFLOW",
        metadata=metadata,
    )
