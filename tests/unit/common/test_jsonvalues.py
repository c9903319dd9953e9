"""JSON values after a trip through protobuf: any depth, and numbers JSON cannot write."""

from __future__ import annotations

import math

from google.protobuf import struct_pb2

from comfyfleet.common.jsonvalues import integral_floats_to_ints, struct_to_python


def nested(depth: int, leaf: object) -> list[object]:
    value: list[object] = [leaf]
    for _ in range(depth - 1):
        value = [value, {"k": 2.0}]
    return value


def test_integral_floats_become_ints_at_any_depth() -> None:
    converted = integral_floats_to_ints(nested(50_000, 3.0))
    depth = 0
    while len(converted) == 2:
        assert converted[1] == {"k": 2} and isinstance(converted[1]["k"], int)
        converted, depth = converted[0], depth + 1
    assert converted == [3] and isinstance(converted[0], int) and depth == 49_999


def test_a_struct_becomes_plain_values_with_non_finite_numbers_kept() -> None:
    # json_format.MessageToDict refuses NaN and infinities; validation must see them to
    # name the field that holds one.
    struct = struct_pb2.Struct()
    struct.update(
        {
            "1": {"class_type": "EmptyImage", "inputs": {"color": math.nan, "w": math.inf}},
            "list": [1.0, "a", True, None, [2.5, {"x": -math.inf}]],
        }
    )
    struct.fields["unset"].CopyFrom(struct_pb2.Value())
    value = struct_to_python(struct)
    assert set(value) == {"1", "list", "unset"}
    inputs = value["1"]["inputs"]
    assert math.isnan(inputs["color"]) and inputs["w"] == math.inf
    assert value["list"][:4] == [1.0, "a", True, None]
    assert value["list"][4][0] == 2.5 and value["list"][4][1] == {"x": -math.inf}
    assert value["unset"] is None
