"""A submitted workflow as the text the platform checks (``comfyfleet.common.workflowcheck``)."""

from __future__ import annotations

import json

from google.protobuf import struct_pb2

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.jsonvalues import integral_floats_to_ints, struct_to_python


def workflow_text(workflow_json: str, workflow: struct_pb2.Struct | None) -> str:
    """The workflow as JSON text: ``workflow_json`` when given, else the Struct's JSON."""
    if workflow_json:
        return workflow_json
    if workflow is None or not workflow.fields:
        raise InvalidArgument(
            "no workflow",
            [FieldViolation("workflow", "send the workflow (or workflow_json) in API format")],
        )
    # NaN and infinities are written as JSON's NaN/Infinity: check_workflow names them.
    return json.dumps(integral_floats_to_ints(struct_to_python(workflow)))
