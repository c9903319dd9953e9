"""The platform's check of a workflow before anything runs or is stored.

The gateway runs it on every submission, and ``comfyfleet run`` on the machine it runs on,
so both refuse the same workflows with the same violations.
"""

from __future__ import annotations

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.workflow.budget import RESOURCE_BUDGET, ResourceBudget
from comfyfleet.workflow.limits import WORKFLOW_LIMITS, WorkflowLimits
from comfyfleet.workflow.objectinfo import unlisted_model_file
from comfyfleet.workflow.specs import NodeCatalog
from comfyfleet.workflow.validate import (
    ValidationResult,
    comfy_error_metadata,
    validate_workflow,
)

# ComfyUI's own answer rides in the status's ErrorInfo for REST clients, and a status must
# fit a call's trailers (comfyfleet.common.errors.MAX_STATUS_BYTES): past this many errors
# and listed outputs it could not, so it is left out and the violations say it all.
COMFY_BODY_MAX_ITEMS = 200


def check_workflow(
    text: str,
    catalog: NodeCatalog,
    limits: WorkflowLimits = WORKFLOW_LIMITS,
    budget: ResourceBudget = RESOURCE_BUDGET,
) -> None:
    """Raises INVALID_ARGUMENT naming every value beyond the workflow ``limits``, else every
    problem of every node, as ComfyUI would, against the node catalog of the execution's
    environment, else every node whose output would exceed the resource ``budget``.

    Unlike ComfyUI, which runs the valid outputs of a partly valid prompt, the API refuses
    a workflow with any node error: a caller should not get fewer outputs than it asked for
    without noticing. A model file that the environment does not carry (not among a model
    input's choices) is not an error here: the scheduler looks it up in the tenant's model
    registry and refuses it there (MODEL_NOT_REGISTERED) when it is not registered.
    """
    decoded, beyond = limits.load(text)
    if beyond:
        first = beyond[0]
        raise InvalidArgument(
            f"the workflow is not valid: {first.field} {first.description}",
            [FieldViolation(v.field, v.description, v.reason) for v in beyond],
            reason="INVALID_WORKFLOW",
        )
    # Parsed once; what is not a JSON object is validation's to report, as ComfyUI does.
    data = decoded if isinstance(decoded, dict) else text
    result = validate_workflow(data, catalog, unlisted_ok=unlisted_model_file)
    issues = result.issues
    if not issues:
        _check_budget(result, budget)
        return
    metadata = comfy_error_metadata(result.comfy_body()) if _small(result) else {}
    message = issues[0].message if result.error is None else result.error.message
    raise InvalidArgument(
        f"the workflow is not valid: {message}",
        [FieldViolation(v.field, v.description, v.reason) for v in result.field_violations()],
        reason="INVALID_WORKFLOW",
        metadata=metadata,
    )


def _check_budget(result: ValidationResult, budget: ResourceBudget) -> None:
    """Only the nodes the outputs need run, so only theirs count."""
    assert result.workflow is not None
    over = budget.violations(result.workflow, result.outputs)
    if over:
        raise InvalidArgument(
            f"the workflow does not fit the resource budget: {over[0].field} {over[0].description}",
            [FieldViolation(v.field, v.description, v.reason) for v in over],
            reason="RESOURCE_BUDGET_EXCEEDED",
        )


def _small(result: ValidationResult) -> bool:
    listed = sum(len(n.errors) + n.dependent_count for n in result.node_errors)
    return listed <= COMFY_BODY_MAX_ITEMS
