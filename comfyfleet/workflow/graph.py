"""The API-format workflow graph: parsing JSON into typed nodes and links.

A workflow is an object of nodes by id; each node has a ``class_type`` and ``inputs``. An input
is either a literal or a link ``[node_id, output_index]`` to an output of another node.
Parsing is lenient on purpose: every structural problem is kept so that validation can report
it the way ComfyUI does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class WorkflowParseError(ValueError):
    """The workflow is not JSON, or not a JSON object of nodes."""


@dataclass(frozen=True, slots=True)
class Link:
    """A reference to output ``output_index`` of node ``node_id``."""

    node_id: str
    output_index: int

    def to_json(self) -> list[Any]:
        return [self.node_id, self.output_index]


@dataclass(frozen=True, slots=True)
class BadLink:
    """A list input that is not a usable link (wrong length, non-integer slot, non-str id)."""

    raw: list[Any]


InputValue = Any
"""A literal value, a :class:`Link` or a :class:`BadLink`."""


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the workflow. ``class_type`` is ``None`` when the node lacks one."""

    id: str
    class_type: str | None
    inputs: Mapping[str, InputValue]
    has_inputs: bool = True

    def links(self) -> Iterator[tuple[str, Link]]:
        """The ``(input name, link)`` pairs of this node."""
        for name, value in self.inputs.items():
            if isinstance(value, Link):
                yield name, value


@dataclass(frozen=True, slots=True)
class Workflow:
    """A parsed workflow. ``raw`` is the JSON object as received (used for PNG metadata)."""

    nodes: Mapping[str, Node]
    raw: Mapping[str, Any]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def with_inputs(self, inputs: Mapping[str, Mapping[str, InputValue]]) -> Workflow:
        """A copy whose nodes take their inputs from ``inputs`` where given."""
        nodes = {
            nid: Node(n.id, n.class_type, inputs[nid], n.has_inputs) if nid in inputs else n
            for nid, n in self.nodes.items()
        }
        return Workflow(nodes, self.raw)


def parse_value(value: Any) -> InputValue:
    """Turn one raw input value into a literal, a :class:`Link` or a :class:`BadLink`."""
    if isinstance(value, list):
        if (
            len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], int)
            and not isinstance(value[1], bool)
        ):
            return Link(value[0], value[1])
        return BadLink(value)
    if isinstance(value, dict) and "__value__" in value:
        # ComfyUI's wrapper for list-valued widgets (a bare list would be read as a link).
        return value["__value__"]
    return value


def _parse_node(node_id: str, body: Any) -> Node:
    if not isinstance(body, dict):
        return Node(node_id, None, {}, has_inputs=False)
    class_type = body.get("class_type")
    raw_inputs = body.get("inputs")
    inputs: dict[str, InputValue] = {}
    if isinstance(raw_inputs, dict):
        inputs = {str(k): parse_value(v) for k, v in raw_inputs.items()}
    name = class_type if isinstance(class_type, str) else None
    return Node(node_id, name, inputs, has_inputs=isinstance(raw_inputs, dict))


def parse_workflow(data: str | bytes | Mapping[str, Any]) -> Workflow:
    """Parse an API-format workflow given as JSON text or as an already decoded object.

    Raises :class:`WorkflowParseError` when the text is not JSON or not an object.
    """
    if isinstance(data, str | bytes | bytearray):
        try:
            decoded = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WorkflowParseError(f"malformed JSON: {exc}") from exc
    else:
        decoded = data
    if not isinstance(decoded, Mapping):
        raise WorkflowParseError("a workflow must be a JSON object of nodes")
    nodes = {str(k): _parse_node(str(k), v) for k, v in decoded.items()}
    return Workflow(nodes, decoded)
