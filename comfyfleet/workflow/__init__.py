"""The torch-free half of the native workflow engine.

- :mod:`~comfyfleet.workflow.specs` / :mod:`~comfyfleet.workflow.catalog`: node specs and the
  catalog of native node types (renders ComfyUI's ``/object_info``);
- :mod:`~comfyfleet.workflow.graph`: parsing API-format workflows;
- :mod:`~comfyfleet.workflow.validate`: ComfyUI-compatible validation;
- :mod:`~comfyfleet.workflow.schedule` / :mod:`~comfyfleet.workflow.runner`: ordering,
  caching and running nodes from a registry of implementations;
- :mod:`~comfyfleet.workflow.io`: the input store and output sink protocols;
- :mod:`~comfyfleet.workflow.engine`: validate-then-run in one call.
"""

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.graph import Link, Node, Workflow, WorkflowParseError, parse_workflow
from comfyfleet.workflow.validate import ValidationIssue, ValidationResult, validate_workflow

__all__ = [
    "NATIVE_CATALOG",
    "Link",
    "Node",
    "ValidationIssue",
    "ValidationResult",
    "Workflow",
    "WorkflowParseError",
    "parse_workflow",
    "validate_workflow",
]
