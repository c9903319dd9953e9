"""JSON numbers after a trip through protobuf doubles."""

from __future__ import annotations

from typing import Any

_EXACT = 2**53


def integral_floats_to_ints(value: Any) -> Any:
    """Turns every integral float of a JSON value into an int.

    A protobuf Struct carries every number as a double, so ``64`` comes back as ``64.0``:
    ComfyUI would treat it as a float (and a link ``["1", 0.0]`` as no link at all). Go's
    protojson, and so grpc-gateway, also writes integral doubles without a fraction.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT:
        return int(value)
    if isinstance(value, dict):
        return {k: integral_floats_to_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_floats_to_ints(v) for v in value]
    return value
