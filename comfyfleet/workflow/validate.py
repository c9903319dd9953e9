"""ComfyUI-compatible workflow validation with typed results.

Validation follows ComfyUI 0.3.64 closely, including its observable quirks, so that the
rendered bodies equal what a real ComfyUI answers to ``POST /prompt``:

* a node without ``class_type`` or with an unknown one fails the whole prompt at once;
* only the nodes an output node depends on are validated, one output after the other;
* literal values are converted like ComfyUI does (``int(value)``, ``float(value)`` ...);
* a link to a missing node or slot is an exception while validating the linked node: ComfyUI
  reports it under the *linked* node, with the input name of the node that links to it;
* every failing node lists, in ``dependent_outputs``, each failing output validated after it.

Outputs are validated in id order and a node's inputs in name order (ComfyUI iterates sets
here, so its order is arbitrary). Every problem of every node is reported, each as a
:class:`ValidationIssue` that also knows its ``field`` and ``description`` for
``google.rpc.BadRequest`` field violations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from comfyfleet.workflow.graph import (
    BadLink,
    InputValue,
    Link,
    Workflow,
    WorkflowParseError,
    parse_workflow,
)
from comfyfleet.workflow.specs import InputSpec, NodeCatalog, NodeSpec

FileExists = Callable[[NodeSpec, InputSpec, str], bool]
"""``file_exists(node_spec, input_spec, name)``: whether a file-backed combo value exists."""

UnlistedOk = Callable[[NodeSpec, InputSpec, Any], bool]
"""``unlisted_ok(node_spec, input_spec, value)``: whether a combo value that is not among the
input's choices is left to someone else (model files the scheduler resolves from the tenant's
registry) rather than being ``value_not_in_list``."""


class ErrorType(StrEnum):
    """ComfyUI's error ``type`` strings (plus ``malformed_json`` and ``dependency_cycle``)."""

    MALFORMED_JSON = "malformed_json"
    INVALID_PROMPT = "invalid_prompt"
    PROMPT_NO_OUTPUTS = "prompt_no_outputs"
    PROMPT_OUTPUTS_FAILED_VALIDATION = "prompt_outputs_failed_validation"
    REQUIRED_INPUT_MISSING = "required_input_missing"
    BAD_LINKED_INPUT = "bad_linked_input"
    RETURN_TYPE_MISMATCH = "return_type_mismatch"
    INVALID_INPUT_TYPE = "invalid_input_type"
    VALUE_SMALLER_THAN_MIN = "value_smaller_than_min"
    VALUE_BIGGER_THAN_MAX = "value_bigger_than_max"
    VALUE_NOT_IN_LIST = "value_not_in_list"
    CUSTOM_VALIDATION_FAILED = "custom_validation_failed"
    EXCEPTION_DURING_INNER_VALIDATION = "exception_during_inner_validation"
    EXCEPTION_DURING_VALIDATION = "exception_during_validation"
    DEPENDENCY_CYCLE = "dependency_cycle"


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def field_path(node_id: str | None, input_name: str | None = None) -> str:
    """``workflow["3"].inputs.scale_by`` (or ``workflow["3"]``, or ``workflow``)."""
    if node_id is None:
        return "workflow"
    path = f"workflow[{_quote(node_id)}]"
    if input_name is None:
        return path
    if _FIELD_NAME.match(input_name):
        return f"{path}.inputs.{input_name}"
    return f"{path}.inputs[{_quote(input_name)}]"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """One validation error, as ComfyUI reports it.

    ``node_id``/``class_type``/``input_name`` say where ComfyUI files the error.
    ``field_node_id``/``field_input`` say where the problem really is (they differ for links
    to missing nodes, which ComfyUI files under the linked node); ``field`` and
    ``description`` are meant for ``google.rpc.BadRequest.FieldViolation``.
    """

    type: str
    message: str
    details: str = ""
    extra_info: Mapping[str, Any] = field(default_factory=dict)
    node_id: str | None = None
    class_type: str | None = None
    input_name: str | None = None
    field_node_id: str | None = None
    field_input: str | None = None
    explanation: str | None = None

    @property
    def field(self) -> str:
        node_id = self.field_node_id if self.field_node_id is not None else self.node_id
        input_name = self.field_input if self.field_node_id is not None else self.input_name
        return field_path(node_id, input_name)

    @property
    def description(self) -> str:
        if self.explanation is not None:
            return self.explanation
        return f"{self.message}: {self.details}" if self.details else self.message

    def to_comfy(self) -> dict[str, Any]:
        """``{"type", "message", "details", "extra_info"}`` as in ComfyUI's bodies."""
        return {
            "type": self.type,
            "message": self.message,
            "details": self.details,
            "extra_info": dict(self.extra_info),
        }


@dataclass(frozen=True, slots=True)
class NodeErrors:
    """The errors ComfyUI files under one node.

    ComfyUI lists under a failing node every failing output validated from then on, so the
    lists of all nodes together grow with the square of the graph. They share one tuple here:
    ``failed_outputs`` (every failing output, in order), of which this node lists those from
    ``first_dependent`` on.
    """

    node_id: str
    class_type: str
    errors: tuple[ValidationIssue, ...]
    failed_outputs: tuple[str, ...]
    first_dependent: int = 0

    @property
    def dependent_outputs(self) -> tuple[str, ...]:
        return self.failed_outputs[self.first_dependent :]

    @property
    def dependent_count(self) -> int:
        return len(self.failed_outputs) - self.first_dependent

    def to_comfy(self) -> dict[str, Any]:
        return {
            "errors": [e.to_comfy() for e in self.errors],
            "dependent_outputs": list(self.dependent_outputs),
            "class_type": self.class_type,
        }


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """A ``google.rpc.BadRequest.FieldViolation`` in plain data."""

    field: str
    description: str
    reason: str


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The outcome of validating a workflow.

    ``error`` is the prompt-level error (the prompt is refused when it is set). Otherwise
    ``outputs`` lists the output nodes that can run, and ``node_errors`` may still hold errors
    of outputs that cannot (ComfyUI runs the valid ones and reports the rest).
    ``workflow`` holds the converted input values to execute with (``None`` when the
    JSON could not be parsed).
    """

    workflow: Workflow | None
    error: ValidationIssue | None
    outputs: tuple[str, ...]
    node_errors: tuple[NodeErrors, ...]

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def issues(self) -> tuple[ValidationIssue, ...]:
        """Every issue: the prompt-level one, then each node's."""
        found: list[ValidationIssue] = [] if self.error is None else [self.error]
        for node in self.node_errors:
            found.extend(node.errors)
        return tuple(found)

    def node_errors_body(self) -> dict[str, Any]:
        return {n.node_id: n.to_comfy() for n in self.node_errors}

    def comfy_body(self) -> dict[str, Any]:
        """ComfyUI's ``POST /prompt`` body: ``{"error", "node_errors"}`` when refused.

        When the prompt is accepted this is ``{"node_errors": {...}}``; ComfyUI adds
        ``prompt_id`` and ``number`` to it.
        """
        if self.error is None:
            return {"node_errors": self.node_errors_body()}
        return {"error": self.error.to_comfy(), "node_errors": self.node_errors_body()}

    def field_violations(self) -> list[FieldViolation]:
        """Every issue as a field violation (``reason`` is the ComfyUI error type).

        The "outputs failed validation" summary is left out when node errors say it all.
        """
        issues = list(self.issues)
        summary = ErrorType.PROMPT_OUTPUTS_FAILED_VALIDATION.value
        if self.node_errors and issues and issues[0].type == summary:
            issues = issues[1:]
        return [FieldViolation(i.field, i.description, i.type) for i in issues]


class _InnerFailure(Exception):
    """An exception ComfyUI's validator would have raised (and reported as such)."""

    def __init__(
        self, exception_type: str, message: str, node_id: str, input_name: str, why: str
    ) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.node_id = node_id
        self.input_name = input_name
        self.why = why


def id_order(node_id: str) -> tuple[int, int, str]:
    """Numeric ids in number order ("2" before "10"), then the rest by text."""
    return (0, int(node_id), node_id) if node_id.isdecimal() else (1, 0, node_id)


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's rule for linking an output of type ``received`` to an input ``expected``.

    Equal names match, ``*`` matches anything, and comma-separated unions match when they
    share a member. Types that are not names (a combo's choice list) match only when equal.
    """
    if _type_json(received) == _type_json(expected):
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    if "*" in got or "*" in want:
        return True
    return bool(got & want)


def _type_json(type_: Any) -> Any:
    """A type as ComfyUI holds it (an output's choices are a list there)."""
    return list(type_) if isinstance(type_, tuple) else type_


def _convert(type_name: str, value: Any) -> Any:
    """Convert a literal the way ComfyUI does (raising what Python raises)."""
    if type_name == "INT":
        return int(value)
    if type_name == "FLOAT":
        return float(value)
    if type_name == "STRING":
        return str(value)
    if type_name == "BOOLEAN":
        return bool(value)
    return value


@dataclass(slots=True)
class _Outcome:
    ok: bool
    reasons: list[ValidationIssue]


_Step = Generator[str, "_Outcome | None", "_Outcome"]
"""Validating one node: yields the id of each upstream node whose outcome it needs (the
driver sends that outcome back, or throws in the :class:`_InnerFailure` it raised) and
returns the node's own outcome."""


class _Validator:
    """Validates nodes on demand, remembering each node's outcome (ComfyUI's ``validated``).

    ComfyUI recurses into each linked node; here every node under validation is a suspended
    generator on an explicit stack, in the same depth-first order, so that a chain of any
    length validates without Python's recursion limit.
    """

    def __init__(
        self,
        workflow: Workflow,
        catalog: NodeCatalog,
        file_exists: FileExists | None,
        unlisted_ok: UnlistedOk | None = None,
    ) -> None:
        self.workflow = workflow
        self.catalog = catalog
        self.file_exists = file_exists
        self.unlisted_ok = unlisted_ok
        self.validated: dict[str, _Outcome] = {}
        self.converted: dict[str, dict[str, InputValue]] = {}
        # The nodes of ``validated`` that failed with reasons, in the same order.
        self.failed: list[str] = []
        self._in_progress: set[str] = set()

    def record(self, node_id: str, outcome: _Outcome) -> None:
        if node_id not in self.validated and not outcome.ok and outcome.reasons:
            self.failed.append(node_id)
        self.validated[node_id] = outcome

    def node(self, node_id: str) -> _Outcome:
        """The outcome of ``node_id``, validating it and what it links to first.

        Raises :class:`_InnerFailure` when validating ``node_id`` itself raised one (an
        upstream node's failure is caught by the node that links to it, as in ComfyUI).
        """
        done = self.validated.get(node_id)
        if done is not None:
            return done
        stack: list[tuple[str, _Step]] = [(node_id, self._start(node_id))]
        reply: _Outcome | None = None
        failure: _InnerFailure | None = None
        while stack:
            current, step = stack[-1]
            try:
                needed = step.send(reply) if failure is None else step.throw(failure)
            except StopIteration as finished:
                stack.pop()
                self._in_progress.discard(current)
                self.record(current, finished.value)
                reply, failure = finished.value, None
                continue
            except _InnerFailure as raised:
                stack.pop()
                self._in_progress.discard(current)
                reply, failure = None, raised
                continue
            reply, failure = self.validated.get(needed), None
            if reply is None:
                stack.append((needed, self._start(needed)))
        if failure is not None:
            raise failure
        assert reply is not None
        return reply

    def _start(self, node_id: str) -> _Step:
        self._in_progress.add(node_id)
        return self._validate(node_id)

    def _validate(self, node_id: str) -> _Step:
        node = self.workflow[node_id]
        if not node.has_inputs:
            raise _InnerFailure("KeyError", "'inputs'", node_id, "", "the node has no inputs")
        assert node.class_type is not None
        spec = self.catalog[node.class_type]
        issues: list[ValidationIssue] = []
        valid = True
        values: dict[str, InputValue] = dict(node.inputs)
        for ispec in sorted(spec.visible_inputs(), key=lambda i: i.name):
            if ispec.name not in node.inputs:
                if ispec.required:
                    issues.append(self._missing(node_id, spec, ispec))
                continue
            value = node.inputs[ispec.name]
            if isinstance(value, BadLink | Link):
                link_ok = yield from self._check_link(node_id, spec, ispec, value, issues)
                valid = valid and link_ok
                continue
            converted = self._check_literal(node_id, spec, ispec, value, issues)
            values[ispec.name] = converted
        self.converted[node_id] = values
        return _Outcome(valid and not issues, issues)

    def _issue(
        self, node_id: str, spec: NodeSpec, ispec: InputSpec, type_: ErrorType, **kw: Any
    ) -> ValidationIssue:
        return ValidationIssue(
            type=type_.value,
            node_id=node_id,
            class_type=spec.name,
            input_name=ispec.name,
            **kw,
        )

    def _missing(self, node_id: str, spec: NodeSpec, ispec: InputSpec) -> ValidationIssue:
        return self._issue(
            node_id,
            spec,
            ispec,
            ErrorType.REQUIRED_INPUT_MISSING,
            message="Required input is missing",
            details=ispec.name,
            extra_info={"input_name": ispec.name},
        )

    def _check_link(
        self,
        node_id: str,
        spec: NodeSpec,
        ispec: InputSpec,
        value: BadLink | Link,
        issues: list[ValidationIssue],
    ) -> Generator[str, _Outcome | None, bool]:
        """Check a linked input; ``False`` when the upstream node is invalid."""
        config = ispec.error_config()
        if isinstance(value, BadLink):
            self._bad_link(node_id, spec, ispec, value, issues)
            return True
        upstream = self.workflow.nodes.get(value.node_id)
        if upstream is None:
            raise _InnerFailure(
                "KeyError",
                repr(value.node_id),
                node_id,
                ispec.name,
                f"input {ispec.name!r} links to node {value.node_id!r}, which does not exist",
            )
        assert upstream.class_type is not None
        return_types = self.catalog[upstream.class_type].return_types
        if not -len(return_types) <= value.output_index < len(return_types):
            raise _InnerFailure(
                "IndexError",
                "tuple index out of range",
                node_id,
                ispec.name,
                f"input {ispec.name!r} links to output {value.output_index} of node "
                f"{value.node_id!r} ({upstream.class_type}), which has "
                f"{len(return_types)} output(s)",
            )
        received = _type_json(return_types[value.output_index])
        expected = config[0]
        if not types_compatible(received, expected):
            issues.append(
                self._issue(
                    node_id,
                    spec,
                    ispec,
                    ErrorType.RETURN_TYPE_MISMATCH,
                    message="Return type mismatch between linked nodes",
                    details=f"{ispec.name}, received_type({received}) "
                    f"mismatch input_type({expected})",
                    extra_info={
                        "input_name": ispec.name,
                        "input_config": config,
                        "received_type": received,
                        "linked_node": value.to_json(),
                    },
                )
            )
            return True
        if value.node_id in self._in_progress:
            issues.append(
                self._issue(
                    node_id,
                    spec,
                    ispec,
                    ErrorType.DEPENDENCY_CYCLE,
                    message="Dependency cycle detected",
                    details=f"{ispec.name}, node {value.node_id} depends on node {node_id}",
                    extra_info={
                        "input_name": ispec.name,
                        "input_config": config,
                        "linked_node": value.to_json(),
                    },
                )
            )
            return True
        try:
            upstream_outcome = yield value.node_id
        except _InnerFailure as failure:
            self.record(
                value.node_id,
                _Outcome(False, [self._inner_issue(value, spec, ispec, config, failure)]),
            )
            return False
        assert upstream_outcome is not None
        return upstream_outcome.ok

    def _bad_link(
        self,
        node_id: str,
        spec: NodeSpec,
        ispec: InputSpec,
        value: BadLink,
        issues: list[ValidationIssue],
    ) -> None:
        """Report a malformed link (or raise what ComfyUI's validator would raise)."""
        raw = value.raw
        if len(raw) != 2:
            issues.append(
                self._issue(
                    node_id,
                    spec,
                    ispec,
                    ErrorType.BAD_LINKED_INPUT,
                    message="Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    details=ispec.name,
                    extra_info={
                        "input_name": ispec.name,
                        "input_config": ispec.error_config(),
                        "received_value": raw,
                    },
                )
            )
            return
        target, slot = raw
        if not isinstance(target, str) or target not in self.workflow.nodes:
            raise _InnerFailure(
                "KeyError",
                repr(target),
                node_id,
                ispec.name,
                f"input {ispec.name!r} links to node {target!r}, which does not exist",
            )
        raise _InnerFailure(
            "TypeError",
            f"tuple indices must be integers or slices, not {type(slot).__name__}",
            node_id,
            ispec.name,
            f"input {ispec.name!r} links to output {slot!r}, which is not an integer",
        )

    def _inner_issue(
        self,
        link: Link,
        spec: NodeSpec,
        ispec: InputSpec,
        config: list[Any],
        failure: _InnerFailure,
    ) -> ValidationIssue:
        upstream = self.workflow[link.node_id]
        return ValidationIssue(
            type=ErrorType.EXCEPTION_DURING_INNER_VALIDATION.value,
            message="Exception when validating inner node",
            details=failure.message,
            extra_info={
                "input_name": ispec.name,
                "input_config": config,
                "exception_message": failure.message,
                "exception_type": failure.exception_type,
                "traceback": [],
                "linked_node": link.to_json(),
            },
            node_id=link.node_id,
            class_type=upstream.class_type,
            input_name=ispec.name,
            field_node_id=failure.node_id,
            field_input=failure.input_name or None,
            explanation=failure.why,
        )

    def _check_literal(
        self,
        node_id: str,
        spec: NodeSpec,
        ispec: InputSpec,
        value: Any,
        issues: list[ValidationIssue],
    ) -> Any:
        """Convert and check a literal input; return the converted value."""
        config = ispec.error_config()
        try:
            converted = _convert(ispec.type, value)
        except Exception as exc:
            issues.append(
                self._issue(
                    node_id,
                    spec,
                    ispec,
                    ErrorType.INVALID_INPUT_TYPE,
                    message=f"Failed to convert an input value to a {ispec.type} value",
                    details=f"{ispec.name}, {value}, {exc}",
                    extra_info={
                        "input_name": ispec.name,
                        "input_config": config,
                        "received_value": value,
                        "exception_message": str(exc),
                    },
                )
            )
            return value
        if ispec.file_input:
            self._check_file(node_id, spec, ispec, converted, issues)
            return converted
        bound = self._check_bounds(node_id, spec, ispec, converted, config)
        if bound is not None:
            issues.append(bound)
            return converted
        if ispec.is_combo:
            self._check_choice(node_id, spec, ispec, converted, issues)
        return converted

    def _check_bounds(
        self, node_id: str, spec: NodeSpec, ispec: InputSpec, value: Any, config: list[Any]
    ) -> ValidationIssue | None:
        try:
            below = ispec.min is not None and value < ispec.min
            above = not below and ispec.max is not None and value > ispec.max
        except TypeError as exc:
            raise _InnerFailure(
                "TypeError", str(exc), node_id, ispec.name, f"{ispec.name}: {exc}"
            ) from None
        if not below and not above:
            return None
        if below:
            type_, message = (
                ErrorType.VALUE_SMALLER_THAN_MIN,
                f"Value {value} smaller than min of {ispec.min}",
            )
        else:
            type_, message = (
                ErrorType.VALUE_BIGGER_THAN_MAX,
                f"Value {value} bigger than max of {ispec.max}",
            )
        return self._issue(
            node_id,
            spec,
            ispec,
            type_,
            message=message,
            details=ispec.name,
            extra_info={"input_name": ispec.name, "input_config": config, "received_value": value},
        )

    def _check_choice(
        self,
        node_id: str,
        spec: NodeSpec,
        ispec: InputSpec,
        value: Any,
        issues: list[ValidationIssue],
    ) -> None:
        choices = list(ispec.choices or ())
        if value in choices:
            return
        if self.unlisted_ok is not None and self.unlisted_ok(spec, ispec, value):
            return
        config: list[Any] | None = ispec.error_config()
        if len(choices) > 20:
            listing = f"(list of length {len(choices)})"
            config = None
        else:
            listing = str(choices)
        issues.append(
            self._issue(
                node_id,
                spec,
                ispec,
                ErrorType.VALUE_NOT_IN_LIST,
                message="Value not in list",
                details=f"{ispec.name}: '{value}' not in {listing}",
                extra_info={
                    "input_name": ispec.name,
                    "input_config": config,
                    "received_value": value,
                },
            )
        )

    def _check_file(
        self,
        node_id: str,
        spec: NodeSpec,
        ispec: InputSpec,
        value: Any,
        issues: list[ValidationIssue],
    ) -> None:
        """ComfyUI's ``VALIDATE_INPUTS`` of the loaders: the named file must exist."""
        if self.file_exists is None:
            return
        if isinstance(value, str) and self.file_exists(spec, ispec, value):
            return
        kind = "latent" if ispec.type == "COMBO" and spec.name == "LoadLatent" else "image"
        issues.append(
            self._issue(
                node_id,
                spec,
                ispec,
                ErrorType.CUSTOM_VALIDATION_FAILED,
                message="Custom validation failed for node",
                details=f"{ispec.name} - Invalid {kind} file: {value}",
                extra_info={
                    "input_name": ispec.name,
                    "input_config": ispec.error_config(),
                    "received_value": value,
                },
            )
        )


def _prompt_error(
    type_: ErrorType, message: str, details: str = "", node_id: str | None = None
) -> ValidationResult:
    issue = ValidationIssue(type=type_.value, message=message, details=details, node_id=node_id)
    return ValidationResult(None, issue, (), ())


def _find_outputs(
    workflow: Workflow, catalog: NodeCatalog, only: Collection[str] | None
) -> list[str] | ValidationResult:
    """The output nodes to run, or the prompt-level error that refuses the prompt."""
    outputs: list[str] = []
    for node_id, node in workflow.nodes.items():
        if node.class_type is None:
            return _prompt_error(
                ErrorType.INVALID_PROMPT,
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
                node_id,
            )
        spec = catalog.get(node.class_type)
        if spec is None:
            return _prompt_error(
                ErrorType.INVALID_PROMPT,
                f"Cannot execute because node {node.class_type} does not exist.",
                f"Node ID '#{node_id}'",
                node_id,
            )
        if spec.output_node and (only is None or node_id in only):
            outputs.append(node_id)
    if not outputs:
        return _prompt_error(ErrorType.PROMPT_NO_OUTPUTS, "Prompt has no outputs")
    return sorted(outputs, key=id_order)


def validate_workflow(
    data: str | bytes | Mapping[str, Any] | Workflow,
    catalog: NodeCatalog,
    *,
    file_exists: FileExists | None = None,
    outputs: Collection[str] | None = None,
    unlisted_ok: UnlistedOk | None = None,
) -> ValidationResult:
    """Validate a workflow against ``catalog`` the way ComfyUI's ``POST /prompt`` does.

    ``file_exists`` checks the files named by loader nodes (skipped when ``None``, e.g. in
    the gateway, which does not hold the input files). ``outputs`` restricts the output
    nodes to run (ComfyUI's partial execution). ``unlisted_ok`` exempts combo values that
    are not among the choices but are someone else's to check (see :data:`UnlistedOk`).
    """
    if isinstance(data, Workflow):
        workflow = data
    else:
        try:
            workflow = parse_workflow(data)
        except WorkflowParseError as exc:
            return _prompt_error(ErrorType.MALFORMED_JSON, "Malformed workflow JSON", str(exc))
    found = _find_outputs(workflow, catalog, outputs)
    if isinstance(found, ValidationResult):
        return found
    validator = _Validator(workflow, catalog, file_exists, unlisted_ok)
    good: list[str] = []
    failed: list[tuple[str, list[ValidationIssue]]] = []
    # Failing node -> the index in ``failed`` of the first failing output it lists: every
    # node failed so far lists each failing output (ComfyUI's quirk: upstream or not).
    first_listed: dict[str, int] = {}
    for output_id in found:
        outcome = _validate_output(validator, output_id)
        if outcome.ok:
            good.append(output_id)
            continue
        for node_id in validator.failed[len(first_listed) :]:
            first_listed[node_id] = len(failed)
        failed.append((output_id, outcome.reasons))
    failed_outputs = tuple(output_id for output_id, _ in failed)
    reports = tuple(
        NodeErrors(
            nid,
            workflow[nid].class_type or "",
            tuple(validator.validated[nid].reasons),
            failed_outputs,
            first,
        )
        for nid, first in first_listed.items()
    )
    converted = workflow.with_inputs(validator.converted)
    if good:
        return ValidationResult(converted, None, tuple(good), reports)
    details = "\n".join(f"{r.message}: {r.details}" for _, reasons in failed for r in reasons)
    error = ValidationIssue(
        type=ErrorType.PROMPT_OUTPUTS_FAILED_VALIDATION.value,
        message="Prompt outputs failed validation",
        details=details,
    )
    return ValidationResult(converted, error, (), reports)


def _validate_output(validator: _Validator, output_id: str) -> _Outcome:
    try:
        return validator.node(output_id)
    except _InnerFailure as failure:
        node = validator.workflow[output_id]
        issue = ValidationIssue(
            type=ErrorType.EXCEPTION_DURING_VALIDATION.value,
            message="Exception when validating node",
            details=failure.message,
            extra_info={"exception_type": failure.exception_type, "traceback": []},
            node_id=output_id,
            class_type=node.class_type,
            field_node_id=failure.node_id,
            field_input=failure.input_name or None,
            explanation=failure.why,
        )
        outcome = _Outcome(False, [issue])
        validator.record(output_id, outcome)
        return outcome


def describe(issues: Sequence[ValidationIssue]) -> str:
    """A one-line human summary of ``issues`` (for logs and error messages)."""
    return "; ".join(f"{i.field}: {i.description}" for i in issues)


#: ``google.rpc.ErrorInfo`` metadata keys that carry ComfyUI's answer to a refused workflow
#: (JSON text), so that the REST front can give clients ComfyUI's ``node_errors`` object.
COMFYUI_NODE_ERRORS = "comfyui_node_errors"
COMFYUI_ERROR = "comfyui_error"


def comfy_error_metadata(body: Mapping[str, Any]) -> dict[str, str]:
    """ErrorInfo metadata for ComfyUI's ``POST /prompt`` answer ``{"error", "node_errors"}``."""
    metadata = {COMFYUI_NODE_ERRORS: json.dumps(body.get("node_errors", {}))}
    if "error" in body:
        metadata[COMFYUI_ERROR] = json.dumps(body["error"])
    return metadata
