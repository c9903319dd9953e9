"""Turning a CreateExecutionRequest into a validated new execution, or a clear error."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2

from comfyfleet.common.environments import NATIVE, name_problem
from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.eventtypes import EXECUTION_EVENT_TYPES, pattern_violations
from comfyfleet.common.jsonvalues import integral_floats_to_ints
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.config import SchedulerSettings

MAX_PRIORITY = 100
MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 256
MAX_REQUEST_ID = 128
MAX_INPUT_NAME = 255
_INPUT_NAME = re.compile(r"^[A-Za-z0-9._\- ()\[\]+@,=]+(/[A-Za-z0-9._\- ()\[\]+@,=]+)*$")
URL_INPUTS_DISABLED = "fetching inputs from URLs is not enabled on this platform"


@dataclass(frozen=True)
class NewInput:
    """An input file sent inline with the request, or named by an upload (``upload_id``,
    with no content; its media type may be left to the upload's)."""

    name: str
    content: bytes
    content_type: str
    upload_id: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def source(self) -> str:
        """What the request's fingerprint knows the file by: its digest, or its upload."""
        return f"upload:{self.upload_id}" if self.upload_id else self.sha256


@dataclass(frozen=True)
class NewExecution:
    """A request that passed validation, with the defaults applied."""

    workflow: dict[str, Any]
    inputs: list[NewInput]
    priority: int
    labels: dict[str, str]
    request_id: str | None
    max_attempts: int
    queue_timeout_s: float
    run_timeout_s: float
    # From acceptance to the end, every wait, attempt and retry included.
    timeout_s: float
    # Which of its events go to the tenant's webhooks (event type patterns); empty: all.
    webhook_events: list[str] = field(default_factory=list)
    # The environment it runs in: the request's, else the platform default.
    environment: str = NATIVE
    node_types: list[str] = field(init=False)

    def __post_init__(self) -> None:
        types = sorted({node["class_type"] for node in self.workflow.values()})
        object.__setattr__(self, "node_types", types)

    @property
    def workflow_json(self) -> str:
        return json.dumps(self.workflow, sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """A digest of every parameter, so a reused request_id with other parameters is caught."""
        doc = {
            "workflow": self.workflow_json,
            "inputs": [[i.name, i.source, i.content_type] for i in self.inputs],
            "priority": self.priority,
            "labels": sorted(self.labels.items()),
            "max_attempts": self.max_attempts,
            "queue_timeout_s": self.queue_timeout_s,
            "run_timeout_s": self.run_timeout_s,
            "timeout_s": self.timeout_s,
        }
        # Only when given, so executions made before the field existed keep their digest.
        if self.webhook_events:
            doc["webhook_events"] = sorted(self.webhook_events)
        if self.environment != NATIVE:
            doc["environment"] = self.environment
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def parse_create_request(
    request: executions_pb2.CreateExecutionRequest, settings: SchedulerSettings
) -> NewExecution:
    """Validates everything before anything is stored; all violations are reported at once."""
    violations: list[FieldViolation] = []
    workflow = _parse_workflow(request, violations)
    inputs = _parse_inputs(request, violations)
    _check_scalars(request, settings, violations)
    if len(request.labels) > MAX_LABELS:
        violations.append(FieldViolation("labels", f"at most {MAX_LABELS} labels"))
    violations += label_violations(request.labels)
    violations += pattern_violations(
        request.webhook_events, "webhook_events", EXECUTION_EVENT_TYPES
    )
    environment = request.environment or settings.default_environment
    problem = name_problem(environment)
    if problem:
        violations.append(FieldViolation("environment", problem))
    queue_timeout = _timeout(request, "queue_timeout", settings.queue_timeout_s, settings)
    run_timeout = _timeout(request, "run_timeout", settings.run_timeout_s, settings)
    timeout = _timeout(request, "timeout", settings.execution_timeout_s, settings)
    for value in (queue_timeout, run_timeout, timeout):
        if isinstance(value, FieldViolation):
            violations.append(value)
    if violations or workflow is None:
        raise InvalidArgument("the execution request is invalid", violations)
    assert isinstance(queue_timeout, float) and isinstance(run_timeout, float)
    assert isinstance(timeout, float)
    return NewExecution(
        workflow=workflow,
        inputs=inputs,
        priority=request.priority,
        labels=dict(request.labels),
        request_id=request.request_id or None,
        max_attempts=request.max_attempts or settings.max_attempts,
        queue_timeout_s=queue_timeout,
        run_timeout_s=run_timeout,
        timeout_s=timeout,
        webhook_events=list(request.webhook_events),
        environment=environment,
    )


def _parse_workflow(
    request: executions_pb2.CreateExecutionRequest, violations: list[FieldViolation]
) -> dict[str, Any] | None:
    if request.workflow_json:
        try:
            graph = json.loads(request.workflow_json, parse_constant=_no_constants)
        except ValueError as err:
            violations.append(FieldViolation("workflow_json", f"not valid JSON: {err}"))
            return None
        source = "workflow_json"
    elif request.HasField("workflow"):
        graph = integral_floats_to_ints(json_format.MessageToDict(request.workflow))
        source = "workflow"
    else:
        violations.append(FieldViolation("workflow", "a workflow or workflow_json is required"))
        return None
    return graph if _check_graph(graph, source, violations) else None


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _check_graph(graph: Any, source: str, violations: list[FieldViolation]) -> bool:
    """The shape of ComfyUI's API format: an object of nodes with a class_type and inputs."""
    if not isinstance(graph, dict):
        violations.append(FieldViolation(source, "must be a JSON object of nodes"))
        return False
    if not graph:
        violations.append(FieldViolation(source, "the workflow has no nodes"))
        return False
    before = len(violations)
    for node_id, node in graph.items():
        where = f"{source}[{json.dumps(node_id)}]"
        if not isinstance(node, dict):
            violations.append(FieldViolation(where, "a node must be a JSON object"))
            continue
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            violations.append(FieldViolation(f"{where}.class_type", "must be a non-empty string"))
        if not isinstance(node.get("inputs", {}), dict):
            violations.append(FieldViolation(f"{where}.inputs", "must be a JSON object"))
    if len(violations) == before and not _fits_a_struct(graph):
        violations.append(FieldViolation(source, "a number is too large for a double"))
    return len(violations) == before


def _fits_a_struct(graph: dict[str, Any]) -> bool:
    """The workflow is returned as a Struct, whose numbers are doubles."""
    try:
        json_format.ParseDict(graph, struct_pb2.Struct())
    except (OverflowError, json_format.ParseError):
        return False
    return True


def _parse_inputs(
    request: executions_pb2.CreateExecutionRequest, violations: list[FieldViolation]
) -> list[NewInput]:
    inputs: list[NewInput] = []
    seen: set[str] = set()
    for i, item in enumerate(request.inputs):
        where = f"inputs[{i}]"
        problem = _input_name_problem(item.name, seen)
        if problem:
            violations.append(FieldViolation(f"{where}.name", problem))
        seen.add(item.name)
        source = item.WhichOneof("source")
        if source == "url":
            violations.append(FieldViolation(f"{where}.url", URL_INPUTS_DISABLED))
        elif source == "upload_id" and not item.upload_id:
            violations.append(FieldViolation(f"{where}.upload_id", "must not be empty"))
        elif source == "upload_id" and not problem:
            inputs.append(NewInput(item.name, b"", item.content_type, item.upload_id))
        elif source is None:
            violations.append(FieldViolation(f"{where}.content", "the file's content is required"))
        elif not problem:
            inputs.append(NewInput(item.name, item.content, _content_type(item)))
    return inputs


def _input_name_problem(name: str, seen: set[str]) -> str | None:
    if not name:
        return "a name is required"
    if len(name) > MAX_INPUT_NAME:
        return f"at most {MAX_INPUT_NAME} characters"
    if not _INPUT_NAME.match(name) or any(part in {".", ".."} for part in name.split("/")):
        return "a relative file name of letters, digits and ._-()[]+@,= (subfolders with /)"
    if name in seen:
        return "another input has the same name"
    return None


def _content_type(item: executions_pb2.InputFile) -> str:
    if item.content_type:
        return item.content_type
    guessed, _ = mimetypes.guess_type(item.name)
    return guessed or "application/octet-stream"


def _check_scalars(
    request: executions_pb2.CreateExecutionRequest,
    settings: SchedulerSettings,
    violations: list[FieldViolation],
) -> None:
    if abs(request.priority) > MAX_PRIORITY:
        violations.append(
            FieldViolation("priority", f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
        )
    if request.max_attempts < 0 or request.max_attempts > settings.max_attempts_limit:
        violations.append(
            FieldViolation(
                "max_attempts", f"must be between 0 (default) and {settings.max_attempts_limit}"
            )
        )
    if len(request.request_id) > MAX_REQUEST_ID:
        violations.append(FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters"))


def label_violations(labels: Mapping[str, str]) -> list[FieldViolation]:
    """The problems of each label's key and value, named ``labels["key"]``."""
    out = []
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_KEY:
            out.append(
                FieldViolation(
                    f"labels[{json.dumps(key)}]", f"keys have 1 to {MAX_LABEL_KEY} characters"
                )
            )
        if len(value) > MAX_LABEL_VALUE:
            out.append(
                FieldViolation(
                    f"labels[{json.dumps(key)}]",
                    f"values have at most {MAX_LABEL_VALUE} characters",
                )
            )
    return out


def parse_label_selector(labels: Mapping[str, str]) -> dict[str, str]:
    """A list's label filter: pairs that could be labels, at most as many as one may have."""
    violations = label_violations(labels)
    if len(labels) > MAX_LABELS:
        violations.insert(0, FieldViolation("labels", f"at most {MAX_LABELS} labels"))
    if violations:
        raise InvalidArgument("the label filter is invalid", violations)
    return dict(labels)


def _timeout(
    request: executions_pb2.CreateExecutionRequest,
    name: str,
    default: float,
    settings: SchedulerSettings,
) -> float | FieldViolation:
    if not request.HasField(name):
        return float(default)
    seconds = getattr(request, name).ToNanoseconds() / 1e9
    if seconds <= 0 or seconds > settings.max_timeout_s:
        return FieldViolation(name, f"must be positive and at most {settings.max_timeout_s:g}s")
    return float(seconds)
