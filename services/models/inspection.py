"""Deciding whether an uploaded file may enter the registry, and what it contains.

Only safetensors is accepted: pickle-based formats (.ckpt, .pt, .pth, .bin, and torch's zip
archives of pickles) run code when loaded, so they are refused by name and by content.
"""

from __future__ import annotations

import io
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from services.models import architecture
from services.models.safetensors_format import FormatError, SafetensorsHeader, read_header

FORMAT = "safetensors"
EXTENSION = ".safetensors"
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_NAME_BYTES = 255
# Path separators, and what Windows or a Content-Disposition header would choke on.
_UNSAFE_CHARACTERS = '/\\<>:"|?*'
ZIP_MAGIC = b"PK\x03\x04"
# Pickle protocols 2 to 5 open with the PROTO opcode and the protocol number.
PICKLE_PROTOCOLS = range(2, 6)
PICKLE_PROTO_OPCODE = 0x80

REASON_BAD_NAME = "INVALID_MODEL_NAME"
REASON_PICKLE = "PICKLE_FORMAT_REFUSED"
REASON_BAD_FILE = "INVALID_SAFETENSORS"
# Training tools store megabytes in a file's own metadata (kohya's tag frequencies); every
# Model message carries it, so only this much is kept.
MAX_METADATA_KEYS = 256
MAX_METADATA_VALUE_CHARS = 4096
PICKLE_ADVICE = "pickle-based formats can run code when loaded; convert the file to safetensors"


def name_violations(name: str) -> list[FieldViolation]:
    """What is wrong with a model's file name, if anything."""
    problem = _name_problem(name)
    if problem is None:
        return []
    reason = REASON_PICKLE if name.lower().endswith(PICKLE_EXTENSIONS) else REASON_BAD_NAME
    return [FieldViolation("model.name", problem, reason)]


def _name_problem(name: str) -> str | None:
    if not name:
        return "the name is required"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    if any(c in _UNSAFE_CHARACTERS for c in name):
        return "the name must be a plain file name, without folders or any of " + _UNSAFE_CHARACTERS
    if name.startswith(".") or name != name.strip():
        return "the name must not start with a dot or start or end with spaces"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "the name must not contain control or unassigned characters"
    if name.lower().endswith(PICKLE_EXTENSIONS):
        return PICKLE_ADVICE
    if not name.lower().endswith(EXTENSION) or len(name) == len(EXTENSION):
        return f"the name must end in {EXTENSION}"
    return None


def inspect_file(path: Path) -> dict[str, Any]:
    """The metadata of a valid safetensors file; InvalidArgument for anything else."""
    with path.open("rb") as stream:
        return inspect_stream(stream, path.stat().st_size)


def inspect_stream(stream: BinaryIO, size: int) -> dict[str, Any]:
    """inspect_file for a stream positioned at the start of a file of `size` bytes."""
    head = stream.read(len(ZIP_MAGIC))
    if head.startswith(ZIP_MAGIC):
        raise _refused("the file is a zip archive (torch.save format)")
    stream.seek(-len(head), io.SEEK_CUR)
    try:
        header = read_header(stream, size)
    except FormatError as err:
        # A failed parse of a file that opens like a pickle is most likely a pickle.
        if _looks_like_pickle(head):
            raise _refused("the file is a Python pickle") from None
        raise InvalidArgument(
            f"the file is not valid safetensors: {err}",
            [FieldViolation("chunk", str(err), REASON_BAD_FILE)],
            reason=REASON_BAD_FILE,
        ) from None
    return describe(header)


def _looks_like_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == PICKLE_PROTO_OPCODE and head[1] in PICKLE_PROTOCOLS


def _refused(what: str) -> InvalidArgument:
    description = f"{what}; {PICKLE_ADVICE}"
    return InvalidArgument(
        f"refused: {description}",
        [FieldViolation("chunk", description, REASON_PICKLE)],
        reason=REASON_PICKLE,
    )


def describe(header: SafetensorsHeader) -> dict[str, Any]:
    """What the registry records about a file: counts, dtypes, its own metadata, a guess."""
    guess = architecture.guess(header.tensors)
    file_metadata, truncated = _bounded(header.metadata)
    return {
        "tensor_count": len(header.tensors),
        "parameters": sum(t.numel for t in header.tensors),
        "dtypes": dict(sorted(Counter(t.dtype for t in header.tensors).items())),
        "header_bytes": header.header_bytes,
        "file_metadata": file_metadata,
        "file_metadata_truncated": truncated,
        "architecture": guess.family,
        "component": guess.component,
    }


def _bounded(metadata: dict[str, str]) -> tuple[dict[str, str], bool]:
    kept = dict(sorted(metadata.items())[:MAX_METADATA_KEYS])
    truncated = len(kept) < len(metadata)
    for key, value in kept.items():
        if len(value) > MAX_METADATA_VALUE_CHARS:
            kept[key] = value[:MAX_METADATA_VALUE_CHARS]
            truncated = True
    return kept, truncated
