"""Environments as every service names and describes them: the runtime an execution runs in
(an engine, its ComfyUI version and custom nodes, extras, the models it carries), its name
rules, its spec as JSON (the executor's ``COMFYFLEET_ENVIRONMENT_SPEC`` file and the
scheduler's ``environments.spec`` column use the proto's own field names), and the text and
digest of its node catalog."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.environments.v1 import environments_pb2

NATIVE = "native"
ENGINES = ("native", "comfyui")
MAX_NAME = 63
_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Model fields only the install step reads: where it fetches a baked model from.
INSTALL_ONLY = ("path", "url")

# The fields that describe the runtime; the rest of Environment is its name or output only.
SPEC_FIELDS = (
    "engine",
    "comfyui_version",
    "custom_nodes",
    "python_packages",
    "apt_packages",
    "models",
    "description",
)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an environment; None when it can."""
    if not name:
        return "an environment name is required"
    if len(name) > MAX_NAME or _NAME.fullmatch(name) is None:
        return (
            f"1 to {MAX_NAME} lowercase letters, digits, dots and dashes,"
            " starting and ending with a letter or digit"
        )
    return None


def check_name(name: str, field: str = "name") -> str:
    """``name`` when it can name an environment, else INVALID_ARGUMENT naming ``field``."""
    problem = name_problem(name)
    if problem:
        raise InvalidArgument(
            f"the environment name {name!r} is invalid", [FieldViolation(field, problem)]
        )
    return name


def spec_of(env: environments_pb2.Environment) -> dict[str, Any]:
    """The environment's spec as JSON (proto field names; fields left at their default are
    left out, so two specs that say the same compare equal)."""
    spec = environments_pb2.Environment()
    for name in SPEC_FIELDS:
        if name in ("custom_nodes", "python_packages", "apt_packages", "models"):
            getattr(spec, name).extend(getattr(env, name))
        else:
            setattr(spec, name, getattr(env, name))
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


def environment_of(name: str, spec: Mapping[str, Any]) -> environments_pb2.Environment:
    """The Environment message of a stored spec."""
    env = json_format.ParseDict(dict(spec), environments_pb2.Environment())
    env.name = name
    return env


def spec_violations(env: environments_pb2.Environment, prefix: str) -> list[FieldViolation]:
    """The problems of an environment's spec, each naming its field under ``prefix``."""
    out: list[FieldViolation] = []
    if env.engine not in ENGINES:
        out.append(FieldViolation(f"{prefix}.engine", f"one of {', '.join(ENGINES)}"))
    if env.engine == NATIVE and (env.comfyui_version or env.custom_nodes):
        out.append(
            FieldViolation(
                f"{prefix}.engine", "a native environment has no ComfyUI version or custom nodes"
            )
        )
    for i, node in enumerate(env.custom_nodes):
        where = f"{prefix}.custom_nodes[{i}]"
        if not node.name or "/" in node.name or node.name in (".", ".."):
            out.append(FieldViolation(f"{where}.name", "a folder name under custom_nodes/"))
        if not node.source:
            out.append(FieldViolation(f"{where}.source", "a git URL or a path is required"))
    for i, model in enumerate(env.models):
        where = f"{prefix}.models[{i}]"
        if not model.folder:
            out.append(FieldViolation(f"{where}.folder", "a ComfyUI model folder is required"))
        if not model.name:
            out.append(FieldViolation(f"{where}.name", "the file name is required"))
        if model.sha256 and _SHA256.fullmatch(model.sha256) is None:
            out.append(FieldViolation(f"{where}.sha256", "64 lowercase hex digits"))
        if model.size_bytes < 0:
            out.append(FieldViolation(f"{where}.size_bytes", "must not be negative"))
    return out


def load_spec_file(path: Path) -> environments_pb2.Environment:
    """An environment spec from a JSON file with the Environment's fields (``engine``,
    ``comfyui_version``, ``custom_nodes`` [{name, source, revision}], ``python_packages``,
    ``apt_packages``, ``models`` [{folder, name, sha256, size_bytes}], ``description``, and
    optionally ``name``): the file the install step (``services.executor.comfyui.install``)
    reads, whose models may also say where to fetch them (``path``, ``url``). Raises
    ValueError saying what is wrong."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a JSON object of the Environment's fields")
    models = doc.get("models")
    if isinstance(models, list):
        # Where the install step fetches a baked model from is the image build's business.
        doc["models"] = [
            {k: v for k, v in m.items() if k not in INSTALL_ONLY} if isinstance(m, dict) else m
            for m in models
        ]
    try:
        return json_format.ParseDict(doc, environments_pb2.Environment())
    except json_format.ParseError as err:
        raise ValueError(f"{path}: {err}") from None


def object_info_text(object_info: Mapping[str, Any]) -> str:
    """A catalog as the text executors send and the scheduler records: compact JSON in the
    engine's own order, so the same catalog gives the same text and digest everywhere."""
    return json.dumps(object_info, separators=(",", ":"), ensure_ascii=False)


def catalog_digest(object_info_json: str) -> str:
    """The digest of a catalog's text (hex sha256)."""
    return hashlib.sha256(object_info_json.encode()).hexdigest()
