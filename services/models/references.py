"""Finding the models an API-format workflow names.

Which node input names which model folder is said once, in
:mod:`comfyfleet.workflow.modelfiles`; the registry's kind of each folder is in
:mod:`services.models.kinds`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.workflow.limits import WORKFLOW_LIMITS
from comfyfleet.workflow.modelfiles import standard_folder
from services.models.kinds import FOLDER_OF_KIND

KIND_OF_FOLDER: dict[str, str] = {folder: kind for kind, folder in FOLDER_OF_KIND.items()}


@dataclass(frozen=True)
class ModelReference:
    """One node input that names a model file."""

    node_id: str
    input_name: str
    name: str
    kind: str

    @property
    def field(self) -> str:
        """The violation path the gateway's workflow validation uses too."""
        return f'workflow["{self.node_id}"].inputs.{self.input_name}'


def kind_of_input(class_type: str, input_name: str) -> str | None:
    """The registry kind a standard loader input names; None for other inputs (and for
    folders the registry has no kind for)."""
    folder = standard_folder(class_type, input_name)
    return KIND_OF_FOLDER.get(folder) if folder is not None else None


def find_references(workflow_json: str) -> list[ModelReference]:
    """Every model reference of the workflow, in node order; links between nodes are skipped.

    Raises InvalidArgument, naming every malformed node, when the text is not an API-format
    workflow.
    """
    nodes = _parse_workflow(workflow_json)
    refs: list[ModelReference] = []
    violations: list[FieldViolation] = []
    for node_id in sorted(nodes, key=_node_order):
        parts = _node_parts(node_id, nodes[node_id])
        if isinstance(parts, FieldViolation):
            violations.append(parts)
        else:
            refs.extend(_node_references(node_id, *parts))
    if violations:
        raise InvalidArgument("the workflow is malformed", violations, reason="INVALID_WORKFLOW")
    return refs


def _node_references(node_id: str, class_type: str, inputs: dict[str, Any]) -> list[ModelReference]:
    refs = []
    for input_name, value in inputs.items():
        kind = kind_of_input(class_type, input_name)
        # A list is a link to another node's output, not a file name.
        if kind is not None and isinstance(value, str):
            refs.append(ModelReference(node_id, input_name, value, kind))
    return refs


def _parse_workflow(text: str) -> dict[str, Any]:
    # The limits CreateExecution holds a workflow to, so that no value of one reaches a query
    # (or anything else) that could not take it.
    nodes, beyond = WORKFLOW_LIMITS.load(text)
    if beyond:
        violations = [FieldViolation(v.field, v.description, v.reason) for v in beyond]
        raise InvalidArgument(
            f"the workflow is malformed: {beyond[0].field} {beyond[0].description}",
            violations,
            reason="INVALID_WORKFLOW",
        )
    if nodes is None:
        try:
            json.loads(text)  # again, for the decoder's own words
        except ValueError as err:
            raise _bad("workflow_json", f"the workflow is not valid JSON: {err}") from None
    if not isinstance(nodes, dict):
        raise _bad("workflow_json", "the workflow must be a JSON object of nodes by id")
    return nodes


def _node_parts(node_id: str, node: Any) -> tuple[str, dict[str, Any]] | FieldViolation:
    field = f'workflow["{node_id}"]'
    if not isinstance(node, dict):
        return FieldViolation(field, "a node must be a JSON object with class_type and inputs")
    class_type = node.get("class_type")
    if not isinstance(class_type, str) or not class_type:
        return FieldViolation(f"{field}.class_type", "class_type must be a non-empty string")
    inputs = node.get("inputs", {})
    if not isinstance(inputs, dict):
        return FieldViolation(f"{field}.inputs", "inputs must be a JSON object")
    return class_type, inputs


def _node_order(node_id: str) -> tuple[int, int, str]:
    """Numeric ids in number order ("2" before "10"), then the rest by text."""
    numeric = node_id.isascii() and node_id.isdigit()
    return (0, int(node_id), "") if numeric else (1, 0, node_id)


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        "the workflow is malformed",
        [FieldViolation(field, description)],
        reason="INVALID_WORKFLOW",
    )
