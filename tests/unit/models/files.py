"""Building safetensors files (and impostors) in memory for the unit tests."""

from __future__ import annotations

import io
import json
import pickle
import struct
from typing import Any

import torch
from safetensors.torch import save


def safetensors_bytes(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> bytes:
    return save(tensors, metadata=metadata)


def small_file() -> bytes:
    """Three tensors of different dtypes, with file metadata."""
    return safetensors_bytes(
        {
            "a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
            "b.bias": torch.ones(4, dtype=torch.float16),
            "c.mask": torch.tensor([True, False, True]),
        },
        metadata={"format": "pt", "ss_network_dim": "4"},
    )


def split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """The header (as JSON) and the data of a safetensors file."""
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def join(header: dict[str, Any] | bytes, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def raw_file(header_text: str, data: bytes = b"") -> bytes:
    """A file whose header is exactly this text, valid or not."""
    return join(header_text.encode(), data)


def pickle_bytes() -> bytes:
    return pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}, protocol=4)


def legacy_torch_bytes() -> bytes:
    """torch.save before the zip format: a pickle (protocol 2)."""
    out = io.BytesIO()
    torch.save({"w": torch.ones(2)}, out, _use_new_zipfile_serialization=False)
    return out.getvalue()


def zip_torch_bytes() -> bytes:
    """torch.save's default format: a zip archive of pickles."""
    out = io.BytesIO()
    torch.save({"w": torch.ones(2)}, out)
    return out.getvalue()
