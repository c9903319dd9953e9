"""Checking a submitted workflow before anything is stored."""

from __future__ import annotations

import json

from google.protobuf import json_format, struct_pb2

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.jsonvalues import integral_floats_to_ints
from comfyfleet.workflow.objectinfo import unlisted_model_file
from comfyfleet.workflow.specs import NodeCatalog
from comfyfleet.workflow.validate import (
    COMFYUI_ERROR,
    COMFYUI_NODE_ERRORS,
    comfy_error_metadata,
    validate_workflow,
)


def workflow_text(workflow_json: str, workflow: struct_pb2.Struct | None) -> str:
    """The workflow as JSON text: ``workflow_json`` when given, else the Struct's JSON."""
    if workflow_json:
        return workflow_json
    if workflow is None or not workflow.fields:
        raise InvalidArgument(
            "no workflow",
            [FieldViolation("workflow", "send the workflow (or workflow_json) in API format")],
        )
    return json.dumps(integral_floats_to_ints(json_format.MessageToDict(workflow)))


def check_workflow(text: str, catalog: NodeCatalog) -> None:
    """Raises INVALID_ARGUMENT naming every problem of every node, as ComfyUI would, against
    the node catalog of the execution's environment.

    Unlike ComfyUI, which runs the valid outputs of a partly valid prompt, the API refuses
    a workflow with any node error: a caller should not get fewer outputs than it asked for
    without noticing. A model file that the environment does not carry (not among a model
    input's choices) is not an error here: the scheduler looks it up in the tenant's model
    registry and refuses it there (MODEL_NOT_REGISTERED) when it is not registered.
    """
    result = validate_workflow(text, catalog, unlisted_ok=unlisted_model_file)
    issues = result.issues
    if not issues:
        return
    metadata = comfy_error_metadata(result.comfy_body())
    message = issues[0].message if result.error is None else result.error.message
    raise InvalidArgument(
        f"the workflow is not valid: {message}",
        [FieldViolation(v.field, v.description, v.reason) for v in result.field_violations()],
        reason="INVALID_WORKFLOW",
        metadata=metadata,
    )


__all__ = ["COMFYUI_ERROR", "COMFYUI_NODE_ERRORS", "check_workflow", "workflow_text"]
