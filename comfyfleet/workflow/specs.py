"""Typed node specifications and the catalog that renders ComfyUI's ``/object_info``.

A :class:`NodeSpec` says what a node type accepts and returns; it carries no behaviour.
The specs are plain data so that the gateway can validate workflows without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class Section(StrEnum):
    """Where an input is declared in ComfyUI's ``input`` object."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    HIDDEN = "hidden"


class _Missing:
    """Marker for "no default declared" (``None`` can be a legitimate default)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

#: Input types whose literal values ComfyUI converts during validation.
PRIMITIVE_TYPES: Final = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})

OutputType = str | tuple[Any, ...]
"""An output's type: a type name, or (custom nodes that output a combo value) its choices."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input of a node type.

    ``type`` is the ComfyUI type name (``INT``, ``IMAGE``, ``COMBO``, ``*`` ...). Combos carry
    their ``choices``; ``legacy_combo`` renders them the old way (the choice list in place of
    the type name) instead of ``["COMBO", {"options": [...]}]``. ``bare`` renders the input
    without an options object (``["IMAGE"]``). ``extra`` holds the remaining options
    verbatim (``tooltip``, ``display``, ``multiline`` ...). ``file_input`` marks combos whose
    choices are the files of the input store (``LoadImage.image``). A hidden input renders as
    its type name, or as ``[type]`` when ``bare`` (nodes of ComfyUI's newer node API).
    """

    name: str
    type: str
    section: Section = Section.REQUIRED
    choices: tuple[str, ...] | None = None
    default: Any = MISSING
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    legacy_combo: bool = False
    bare: bool = False
    file_input: bool = False
    lazy: bool = False

    @property
    def required(self) -> bool:
        return self.section is Section.REQUIRED

    @property
    def is_combo(self) -> bool:
        return self.choices is not None

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    def options(self, choices: Sequence[str] | None = None) -> dict[str, Any]:
        """The options object ComfyUI shows for this input (``{}`` when it has none)."""
        opts: dict[str, Any] = {}
        if self.is_combo and not self.legacy_combo:
            opts["options"] = list(choices if choices is not None else self.choices or ())
        if self.default is not MISSING:
            opts["default"] = self.default
        for key in ("min", "max", "step"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        if self.lazy:
            opts["lazy"] = True
        opts.update(self.extra)
        return opts

    def config(self, choices: Sequence[str] | None = None) -> list[Any]:
        """``[type, options]`` as in ``/object_info`` (``[type]`` for bare inputs)."""
        if self.section is Section.HIDDEN:
            raise ValueError("hidden inputs have no config")
        head: Any = self.type
        if self.is_combo and self.legacy_combo:
            head = list(choices if choices is not None else self.choices or ())
        if self.bare:
            return [head]
        return [head, self.options(choices)]

    def error_config(self, choices: Sequence[str] | None = None) -> list[Any]:
        """``[type, options]`` as ComfyUI puts it in validation errors (never bare)."""
        config = self.config(choices)
        return config if len(config) == 2 else [config[0], {}]


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One output slot of a node type."""

    type: OutputType
    #: ComfyUI names an output by its type when the node gives no names.
    name: OutputType
    is_list: bool = False
    tooltip: str | None = None


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """The declaration of a node type, as ``/object_info`` describes it.

    ``extra`` holds top-level fields rendered verbatim (``api_node``, ``deprecated``,
    ``experimental`` on newer nodes); ``output_tooltips`` is rendered when declared.
    ``empty_sections`` are input sections shown although they declare nothing
    (``"required": {}``).
    """

    name: str
    category: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...] = ()
    output_node: bool = False
    display_name: str | None = None
    description: str = ""
    python_module: str = "nodes"
    output_tooltips: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    empty_sections: tuple[Section, ...] = ()
    _by_name: dict[str, InputSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {i.name: i for i in self.inputs}
        if len(by_name) != len(self.inputs):
            raise ValueError(f"{self.name}: duplicate input names")
        object.__setattr__(self, "_by_name", by_name)

    def input(self, name: str) -> InputSpec | None:
        return self._by_name.get(name)

    def visible_inputs(self) -> Iterator[InputSpec]:
        """Required and optional inputs, in declaration order."""
        return (i for i in self.inputs if i.section is not Section.HIDDEN)

    def hidden_inputs(self) -> Iterator[InputSpec]:
        return (i for i in self.inputs if i.section is Section.HIDDEN)

    @property
    def return_types(self) -> tuple[OutputType, ...]:
        return tuple(o.type for o in self.outputs)

    def render(self, file_choices: Sequence[str] | None = None) -> dict[str, Any]:
        """This node's entry of ``/object_info``.

        ``file_choices`` replaces the choices of ``file_input`` combos (ComfyUI lists its input
        folder there).
        """
        # ComfyUI lists the sections in this order; only those declared appear.
        declared = {i.section for i in self.inputs} | set(self.empty_sections)
        sections: dict[str, dict[str, Any]] = {s.value: {} for s in Section if s in declared}
        order: dict[str, list[str]] = {s: [] for s in sections}
        for spec in self.inputs:
            key = spec.section.value
            if spec.section is Section.HIDDEN:
                value: Any = [spec.type] if spec.bare else spec.type
            else:
                choices = file_choices if spec.file_input and file_choices is not None else None
                value = spec.config(choices)
            sections[key][spec.name] = value
            order[key].append(spec.name)
        out: dict[str, Any] = {
            "input": sections,
            "input_order": order,
            "output": [list(o.type) if isinstance(o.type, tuple) else o.type for o in self.outputs],
            "output_is_list": [o.is_list for o in self.outputs],
            "output_name": [
                list(o.name) if isinstance(o.name, tuple) else o.name for o in self.outputs
            ],
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.output_tooltips:
            out["output_tooltips"] = [o.tooltip for o in self.outputs]
        out.update(self.extra)
        return out


class NodeCatalog(Mapping[str, NodeSpec]):
    """An immutable set of node specs, by class name."""

    def __init__(self, specs: Iterable[NodeSpec]) -> None:
        self._specs: dict[str, NodeSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"duplicate node type {spec.name}")
            self._specs[spec.name] = spec

    def __getitem__(self, name: str) -> NodeSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def subset(self, names: Iterable[str]) -> NodeCatalog:
        """A catalog holding only ``names`` (unknown names are ignored)."""
        return NodeCatalog(self._specs[n] for n in names if n in self._specs)

    def object_info(
        self, file_choices: Callable[[NodeSpec, InputSpec], Sequence[str]] | None = None
    ) -> dict[str, Any]:
        """The ComfyUI-compatible ``GET /object_info`` body for every node of the catalog.

        ``file_choices(spec, input)`` supplies the listing for file-backed combos.
        """
        body: dict[str, Any] = {}
        for name, spec in self._specs.items():
            listing: Sequence[str] | None = None
            if file_choices is not None:
                file_input = next((i for i in spec.inputs if i.file_input), None)
                if file_input is not None:
                    listing = file_choices(spec, file_input)
            body[name] = spec.render(listing)
        return body
