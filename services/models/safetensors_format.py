"""Reading a safetensors header without trusting it.

Layout: 8 bytes little-endian header length N, N bytes of JSON header, then the data. The
header maps tensor names to {dtype, shape, data_offsets}, offsets relative to the data start,
plus an optional "__metadata__" string map. A file is accepted only when its tensors tile the
data exactly, so no byte of it is unaccounted for and no tensor reads past the end.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

LENGTH_BYTES = 8
# safetensors' own limit; a real header is a few hundred kilobytes at most.
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"

# Bits per element of every dtype the safetensors format defines.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}

_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})


class FormatError(ValueError):
    """The bytes are not a valid safetensors file; the message says what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    header_bytes: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]


def read_header(stream: BinaryIO, file_size: int) -> SafetensorsHeader:
    """Reads and checks the header of the file `stream` is positioned at the start of."""
    length = _header_length(stream.read(LENGTH_BYTES), file_size)
    raw = stream.read(length)
    if len(raw) != length:
        raise FormatError(f"the file ends inside its {length}-byte header")
    entries = _parse_json(raw)
    metadata = _file_metadata(entries.pop(METADATA_KEY, {}))
    tensors = [_tensor(name, spec) for name, spec in entries.items()]
    _check_layout(tensors, file_size - LENGTH_BYTES - length)
    return SafetensorsHeader(length, tuple(tensors), metadata)


def _header_length(prefix: bytes, file_size: int) -> int:
    if len(prefix) < LENGTH_BYTES or file_size < LENGTH_BYTES:
        raise FormatError("the file is shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix)
    if length < 2:
        raise FormatError(f"the header length {length} is too small for a JSON object")
    if length > MAX_HEADER_BYTES:
        raise FormatError(f"the header length {length} exceeds the limit of {MAX_HEADER_BYTES}")
    if LENGTH_BYTES + length > file_size:
        raise FormatError(
            f"the header length {length} runs past the end of the file ({file_size} bytes)"
        )
    return int(length)


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("the header is not UTF-8") from None
    if not text.startswith("{"):
        raise FormatError("the header does not start with a JSON object")
    try:
        entries = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as err:
        raise FormatError(f"the header is not valid JSON: {err}") from None
    if not isinstance(entries, dict):
        raise FormatError("the header is not a JSON object")
    return entries


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two readers could pick different entries of a duplicated key: refuse the ambiguity.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"the header names {key!r} twice")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise FormatError(f"the header holds the non-JSON constant {name}")


def _file_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise FormatError(f"{METADATA_KEY} must map strings to strings")
    return value


def _tensor(name: str, spec: Any) -> TensorInfo:
    if not isinstance(spec, dict) or set(spec) != _TENSOR_KEYS:
        raise FormatError(f"tensor {name!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise FormatError(f"tensor {name!r} has the unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise FormatError(f"tensor {name!r} has a shape that is not a list of counts")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
        raise FormatError(f"tensor {name!r} must have data_offsets [begin, end]")
    info = TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])
    _check_span(info)
    return info


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_span(info: TensorInfo) -> None:
    if info.end < info.begin:
        raise FormatError(f"tensor {info.name!r} ends before it begins")
    bits = info.numel * DTYPE_BITS[info.dtype]
    if bits % 8:
        raise FormatError(f"tensor {info.name!r} does not fill a whole number of bytes")
    if info.end - info.begin != bits // 8:
        raise FormatError(
            f"tensor {info.name!r} is {info.dtype}{list(info.shape)}, {bits // 8} bytes, "
            f"but its data_offsets span {info.end - info.begin}"
        )


def _check_layout(tensors: list[TensorInfo], data_size: int) -> None:
    """The tensors, in offset order, must follow each other without gap or overlap."""
    position = 0
    previous: TensorInfo | None = None
    for info in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if info.end > data_size:
            raise FormatError(
                f"tensor {info.name!r} ends at byte {info.end}, past the {data_size} data bytes"
            )
        if info.begin < position and previous is not None:
            raise FormatError(f"tensors {previous.name!r} and {info.name!r} overlap")
        if info.begin > position:
            raise FormatError(f"bytes {position}..{info.begin} before {info.name!r} are unused")
        position, previous = info.end, info
    if position != data_size:
        raise FormatError(f"{data_size - position} bytes after the last tensor are unused")
