"""ComfyUI's ``GET /object_info`` as a typed :class:`~comfyfleet.workflow.specs.NodeCatalog`,
and the model files a workflow names that an environment does not carry.

:func:`catalog_from_object_info` keeps everything ``/object_info`` says, so that the catalog
renders back to the same JSON (``catalog.object_info() == obj``) and
:func:`~comfyfleet.workflow.validate.validate_workflow` answers what that ComfyUI answers:

* ``[[choices...], opts]`` is an old-style combo, ``["COMBO", {"options": [...]}]`` a new-style
  one (``["COMBO", {...}]`` without options takes any value); ``["IMAGE"]`` is a bare input;
* ``default``, ``min``, ``max``, ``step`` and ``lazy: true`` become fields, every other option
  (``tooltip``, ``multiline``, ``forceInput``, ``image_upload`` ...) is kept verbatim;
* hidden inputs are a type name or ``[type]``; a section may be declared empty;
* an output's type is a name, or a combo's choice list (custom nodes that output one);
* combos that list the input folder's files (``image_upload``, ``video_upload``,
  ``file_upload`` ... and ``LoadLatent``) are file inputs: the job's own input files are
  checked where they are, not against the listing of the machine that answered.

Two differences remain, both deliberate: a re-rendered entry equals the original as JSON
data but may order the keys of an options object differently; and a new-style combo's value
is checked against its options (ComfyUI 0.3.64 checks only old-style combos there and lets
the node fail at run time), as the native catalog always has.

Model files (:func:`is_model_input`): a combo input names model files when its choices include
a file name with a model weights ending (``.safetensors``, ``.ckpt``, ``.pt``, ``.pth``,
``.bin``, ``.gguf``, ``.sft``, ``.onnx`` ...), or when its choices are empty (no such model in
the environment yet) and its node is a loader (category containing "loader") or the input is
one of ComfyUI's standard loader inputs (``ckpt_name``, ``lora_name`` ...). A non-empty string
value of such an input that is not among the environment's choices is a
:class:`ModelReference`, a model the tenant's registry must supply (when only the category
made it a model input, the value must end with a model weights ending too, since loaders
also pick folders from empty lists). Its folder comes from the standard loader inputs table
(:mod:`comfyfleet.workflow.modelfiles`) and is None for inputs that table does not know (the
registered model's own type decides then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from comfyfleet.workflow.graph import Workflow, parse_workflow
from comfyfleet.workflow.modelfiles import has_model_extension, standard_folder
from comfyfleet.workflow.specs import (
    InputSpec,
    NodeCatalog,
    NodeSpec,
    OutputSpec,
    OutputType,
    Section,
)
from comfyfleet.workflow.validate import field_path, id_order

#: Options that say a combo lists the files of ComfyUI's input (or output) folder.
_UPLOAD_OPTIONS: Final = frozenset(
    {"image_upload", "video_upload", "audio_upload", "file_upload", "upload"}
)
#: File combos that say so by nothing but their node (ComfyUI's ``VALIDATE_INPUTS``).
_FILE_COMBOS: Final = frozenset({("LoadLatent", "latent")})
#: Node entry keys that become NodeSpec fields; every other key is kept verbatim.
_NODE_KEYS: Final = frozenset(
    {
        "input",
        "input_order",
        "output",
        "output_is_list",
        "output_name",
        "output_tooltips",
        "name",
        "display_name",
        "description",
        "python_module",
        "category",
        "output_node",
    }
)


class ObjectInfoError(ValueError):
    """``/object_info`` holds something that is not a node description ComfyUI would give."""


def catalog_from_object_info(obj: Mapping[str, Any]) -> NodeCatalog:
    """The node catalog of a ComfyUI ``GET /object_info`` body.

    Raises :class:`ObjectInfoError`, naming the node and input, for entries that are not
    shaped like ComfyUI's.
    """
    if not isinstance(obj, Mapping):
        raise ObjectInfoError("object_info must be an object of node types by name")
    return NodeCatalog(node_spec_from_info(name, info) for name, info in obj.items())


def node_spec_from_info(name: str, info: Any) -> NodeSpec:
    """One node type of ``/object_info``."""
    if not isinstance(info, Mapping):
        raise ObjectInfoError(f"{name}: a node type must be an object")
    if info.get("name", name) != name:
        raise ObjectInfoError(f"{name}: its entry is named {info.get('name')!r}")
    inputs, empty = _inputs(name, info.get("input", {}), info.get("input_order", {}))
    outputs, tooltips_fit = _outputs(name, info)
    extra = {k: v for k, v in info.items() if k not in _NODE_KEYS}
    if "output_tooltips" in info and not tooltips_fit:
        # ComfyUI shows whatever the node declares, even a list that does not fit its outputs.
        extra["output_tooltips"] = info["output_tooltips"]
    try:
        return NodeSpec(
            name=name,
            category=info.get("category", "sd"),
            inputs=inputs,
            outputs=outputs,
            output_node=info.get("output_node", False),
            display_name=info.get("display_name", name),
            description=info.get("description", ""),
            python_module=info.get("python_module", "nodes"),
            output_tooltips=tooltips_fit,
            extra=extra,
            empty_sections=empty,
        )
    except ValueError as err:
        raise ObjectInfoError(str(err)) from None


def _inputs(
    node: str, sections: Any, input_order: Any
) -> tuple[tuple[InputSpec, ...], tuple[Section, ...]]:
    if not isinstance(sections, Mapping):
        raise ObjectInfoError(f"{node}: 'input' must be an object of sections")
    unknown = set(sections) - {s.value for s in Section}
    if unknown:
        raise ObjectInfoError(f"{node}: unknown input sections {sorted(unknown)}")
    specs: list[InputSpec] = []
    empty: list[Section] = []
    for section in Section:
        declared = sections.get(section.value)
        if declared is None:
            continue
        if not isinstance(declared, Mapping):
            raise ObjectInfoError(f"{node}: input section {section.value!r} must be an object")
        if not declared:
            empty.append(section)
        order = input_order.get(section.value) if isinstance(input_order, Mapping) else None
        for input_name in _ordered(declared, order):
            specs.append(input_spec_from_config(node, input_name, section, declared[input_name]))
    return tuple(specs), tuple(empty)


def _ordered(declared: Mapping[str, Any], order: Any) -> list[str]:
    """The section's input names in ``input_order`` (ComfyUI derives it from the same keys,
    so it only differs from the section's own order after a trip through an unordered map)."""
    if isinstance(order, list) and sorted(map(str, order)) == sorted(declared):
        return [str(n) for n in order]
    return list(declared)


def input_spec_from_config(node: str, name: str, section: Section, config: Any) -> InputSpec:
    """One input: ``[type]``, ``[type, options]``, or for hidden inputs a type name."""
    where = f"{node}.{name}"
    if section is Section.HIDDEN:
        return _hidden(where, name, config)
    if not isinstance(config, list | tuple) or len(config) not in (1, 2):
        raise ObjectInfoError(f"{where}: an input must be [type] or [type, options]")
    head = config[0]
    opts = config[1] if len(config) == 2 else {}
    if not isinstance(opts, Mapping):
        raise ObjectInfoError(f"{where}: an input's options must be an object")
    fields = _option_fields(opts)
    rest: dict[str, Any] = fields.pop("extra")
    if isinstance(head, list | tuple):
        type_, choices, legacy = "COMBO", tuple(head), True
    elif isinstance(head, str):
        type_, legacy = head, False
        options = rest.get("options")
        choices = None
        if head == "COMBO" and isinstance(options, list):
            choices = tuple(rest.pop("options"))
    else:
        raise ObjectInfoError(f"{where}: an input's type must be a name or a list of choices")
    file_input = choices is not None and (
        (node, name) in _FILE_COMBOS or any(rest.get(k) for k in _UPLOAD_OPTIONS)
    )
    return InputSpec(
        name,
        type_,
        section=section,
        choices=choices,
        extra=rest,
        legacy_combo=legacy,
        bare=len(config) == 1,
        file_input=file_input,
        **fields,
    )


def _hidden(where: str, name: str, config: Any) -> InputSpec:
    if isinstance(config, str):
        return InputSpec(name, config, section=Section.HIDDEN)
    if isinstance(config, list | tuple) and len(config) == 1 and isinstance(config[0], str):
        return InputSpec(name, config[0], section=Section.HIDDEN, bare=True)
    raise ObjectInfoError(f"{where}: a hidden input must be a type name or [type name]")


def _option_fields(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The options InputSpec holds as fields, and ``extra``: the rest, in their order.

    ``min``/``max``/``step`` of None and ``lazy`` other than true stay in ``extra``, since
    InputSpec renders those fields only when set.
    """
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in opts.items():
        if key == "default":
            fields["default"] = value
        elif key in ("min", "max", "step") and value is not None:
            fields[key] = value
        elif key == "lazy" and value is True:
            fields["lazy"] = True
        else:
            extra[key] = value
    fields["extra"] = extra
    return fields


def _outputs(node: str, info: Mapping[str, Any]) -> tuple[tuple[OutputSpec, ...], bool]:
    """The outputs, and whether ``output_tooltips`` gives one tooltip per output."""
    types = info.get("output", [])
    if not isinstance(types, list | tuple):
        raise ObjectInfoError(f"{node}: 'output' must be a list")
    is_list = info.get("output_is_list", [False] * len(types))
    names = info.get("output_name", types)
    if not isinstance(is_list, list | tuple) or len(is_list) != len(types):
        raise ObjectInfoError(f"{node}: 'output_is_list' must have one flag per output")
    if not isinstance(names, list | tuple) or len(names) != len(types):
        raise ObjectInfoError(f"{node}: 'output_name' must have one name per output")
    tooltips = info.get("output_tooltips")
    fits = isinstance(tooltips, list) and len(tooltips) == len(types)
    outputs = tuple(
        OutputSpec(
            _output_type(node, t),
            _output_type(node, n),
            is_list=bool(f),
            tooltip=tooltips[i] if fits else None,  # type: ignore[index]
        )
        for i, (t, f, n) in enumerate(zip(types, is_list, names, strict=True))
    )
    return outputs, fits


def _output_type(node: str, type_: Any) -> OutputType:
    if isinstance(type_, str):
        return type_
    if isinstance(type_, list | tuple):
        return tuple(type_)
    raise ObjectInfoError(f"{node}: an output type must be a name or a list of choices")


# --- model files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelReference:
    """A node input whose value names a model file the environment does not carry."""

    node_id: str
    input_name: str
    name: str
    #: The ComfyUI model folder the input reads ("checkpoints", "loras" ...); None when the
    #: catalog and the standard loader table do not say.
    folder: str | None

    @property
    def field(self) -> str:
        """The violation path workflow validation uses for this input."""
        return field_path(self.node_id, self.input_name)


def is_model_input(spec: NodeSpec, ispec: InputSpec) -> bool:
    """Whether ``ispec`` of node type ``spec`` names model files (rule in the module doc)."""
    if ispec.choices is None or ispec.file_input:
        return False
    if any(has_model_extension(c) for c in ispec.choices):
        return True
    if ispec.choices:
        return False
    return "loader" in spec.category.lower() or standard_folder(spec.name, ispec.name) is not None


def unlisted_model_file(spec: NodeSpec, ispec: InputSpec, value: Any) -> bool:
    """For ``validate_workflow(unlisted_ok=...)``: a file name given to a model input is the
    model registry's to resolve, not a ``value_not_in_list`` error.

    Where only the node's category makes the input a model input (empty choices, not a
    standard loader input), the value must itself look like a model file: loaders also pick
    folders and other things from empty lists."""
    if not isinstance(value, str) or not value or not is_model_input(spec, ispec):
        return False
    return (
        bool(ispec.choices)
        or standard_folder(spec.name, ispec.name) is not None
        or has_model_extension(value)
    )


def model_folder(spec: NodeSpec, ispec: InputSpec) -> str | None:
    """The model folder a model input reads, when known."""
    return standard_folder(spec.name, ispec.name)


def model_references(
    workflow_nodes: Workflow | Mapping[str, Any] | str | bytes,
    catalog_or_object_info: NodeCatalog | Mapping[str, Any],
) -> list[ModelReference]:
    """The model files ``workflow_nodes`` names that the environment does not carry.

    Every literal string value of a model input (:func:`is_model_input`) that is not among
    that input's choices, in node id order then the node's input order. Nodes of unknown
    types and links are skipped: validation reports those.
    """
    catalog = _catalog(catalog_or_object_info)
    workflow = (
        workflow_nodes if isinstance(workflow_nodes, Workflow) else parse_workflow(workflow_nodes)
    )
    refs: list[ModelReference] = []
    for node_id in sorted(workflow.nodes, key=id_order):
        node = workflow.nodes[node_id]
        spec = catalog.get(node.class_type) if node.class_type is not None else None
        if spec is None:
            continue
        for ispec in spec.visible_inputs():
            value = node.inputs.get(ispec.name)
            if not isinstance(value, str) or value in (ispec.choices or ()):
                continue
            if unlisted_model_file(spec, ispec, value):
                refs.append(ModelReference(node_id, ispec.name, value, model_folder(spec, ispec)))
    return refs


def _catalog(catalog_or_object_info: NodeCatalog | Mapping[str, Any]) -> NodeCatalog:
    if isinstance(catalog_or_object_info, NodeCatalog):
        return catalog_or_object_info
    return catalog_from_object_info(catalog_or_object_info)


__all__: Sequence[str] = (
    "ModelReference",
    "ObjectInfoError",
    "catalog_from_object_info",
    "input_spec_from_config",
    "is_model_input",
    "model_folder",
    "model_references",
    "node_spec_from_info",
    "unlisted_model_file",
)
