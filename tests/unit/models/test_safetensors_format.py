"""The safetensors header checks: valid files pass, every kind of corruption is refused."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import load

from services.models.safetensors_format import (
    MAX_HEADER_BYTES,
    FormatError,
    SafetensorsHeader,
    read_header,
)
from tests.unit.models.files import join, raw_file, safetensors_bytes, small_file, split


def parse(blob: bytes) -> SafetensorsHeader:
    return read_header(io.BytesIO(blob), len(blob))


def test_reads_a_file_written_by_safetensors() -> None:
    header = parse(small_file())
    by_name = {t.name: t for t in header.tensors}
    assert set(by_name) == {"a.weight", "b.bias", "c.mask"}
    assert by_name["a.weight"].dtype == "F32"
    assert by_name["a.weight"].shape == (2, 3)
    assert by_name["a.weight"].end - by_name["a.weight"].begin == 24
    assert by_name["b.bias"].dtype == "F16"
    assert by_name["c.mask"].dtype == "BOOL"
    assert header.metadata == {"format": "pt", "ss_network_dim": "4"}


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float64,
        torch.bfloat16,
        torch.int64,
        torch.int8,
        torch.uint8,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
        torch.complex64,
    ],
)
def test_every_dtype_torch_writes_is_known(dtype: torch.dtype) -> None:
    header = parse(safetensors_bytes({"t": torch.zeros(3, 5).to(dtype)}))
    assert header.tensors[0].shape == (3, 5)


def test_empty_and_zero_sized_tensors_are_valid() -> None:
    assert parse(safetensors_bytes({})).tensors == ()
    header = parse(safetensors_bytes({"empty": torch.zeros(0, 4), "x": torch.ones(2)}))
    assert {t.name: t.numel for t in header.tensors} == {"empty": 0, "x": 2}


def test_a_scalar_has_one_element() -> None:
    header = parse(safetensors_bytes({"s": torch.tensor(3.0)}))
    assert header.tensors[0].shape == ()
    assert header.tensors[0].numel == 1


def test_sub_byte_dtypes_count_bits() -> None:
    data = bytes(3)
    header = parse(join({"q": {"dtype": "F4", "shape": [6], "data_offsets": [0, 3]}}, data))
    assert header.tensors[0].numel == 6
    with pytest.raises(FormatError, match="whole number of bytes"):
        parse(join({"q": {"dtype": "F4", "shape": [5], "data_offsets": [0, 3]}}, data))


def test_what_passes_also_loads() -> None:
    blob = small_file()
    parse(blob)
    assert torch.equal(load(blob)["a.weight"], torch.arange(6, dtype=torch.float32).reshape(2, 3))


def _with_header(change: Callable[[dict[str, Any]], None]) -> bytes:
    header, data = split(small_file())
    change(header)
    return join(header, data)


def _set(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        header[name][key] = value

    return change


def _offsets_of(header: dict[str, Any]) -> dict[str, list[int]]:
    return {k: v["data_offsets"] for k, v in header.items() if k != "__metadata__"}


def _swap_into_overlap(header: dict[str, Any]) -> None:
    # a.weight is 24 bytes at 0..24; make b.bias (8 bytes) start inside it.
    offsets = _offsets_of(header)
    first = min(offsets, key=lambda k: offsets[k][0])
    second = sorted(offsets, key=lambda k: offsets[k][0])[1]
    begin = offsets[first][1] - 2
    size = offsets[second][1] - offsets[second][0]
    header[second]["data_offsets"] = [begin, begin + size]


CORRUPT_HEADERS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown dtype": (_set("a.weight", "dtype", "F12"), "unknown dtype"),
    "dtype not a string": (_set("a.weight", "dtype", 32), "unknown dtype"),
    "shape not a list": (_set("a.weight", "shape", 6), "shape"),
    "negative dimension": (_set("a.weight", "shape", [-2, -3]), "shape"),
    "fractional dimension": (_set("a.weight", "shape", [2.0, 3]), "shape"),
    "boolean dimension": (_set("a.weight", "shape", [True, 6]), "shape"),
    "shape larger than span": (_set("a.weight", "shape", [2, 4]), "data_offsets span"),
    "shape smaller than span": (_set("a.weight", "shape", [2, 2]), "data_offsets span"),
    "dtype wider than span": (_set("a.weight", "dtype", "F64"), "data_offsets span"),
    "offsets not a pair": (_set("a.weight", "data_offsets", [0]), "data_offsets"),
    "offsets negative": (_set("a.weight", "data_offsets", [-24, 0]), "data_offsets"),
    "offsets reversed": (_set("a.weight", "data_offsets", [24, 0]), "ends before it begins"),
    "missing data_offsets": (lambda h: h["a.weight"].pop("data_offsets"), "exactly"),
    "extra key": (_set("a.weight", "strides", [3, 1]), "exactly"),
    "tensor not an object": (lambda h: h.update({"a.weight": [1, 2]}), "exactly"),
    "overlapping tensors": (_swap_into_overlap, "overlap"),
    "metadata not a map": (lambda h: h.update({"__metadata__": ["a"]}), "__metadata__"),
    "metadata value not a string": (
        lambda h: h.update({"__metadata__": {"steps": 1000}}),
        "__metadata__",
    ),
    "nested metadata": (
        lambda h: h.update({"__metadata__": {"a": {"b": "c"}}}),
        "__metadata__",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_HEADERS))
def test_corrupt_header_is_refused(case: str) -> None:
    change, message = CORRUPT_HEADERS[case]
    with pytest.raises(FormatError, match=message):
        parse(_with_header(change))


def test_gap_between_tensors_is_refused() -> None:
    header, data = split(small_file())
    offsets = _offsets_of(header)
    last = max(offsets, key=lambda k: offsets[k][1])
    begin, end = offsets[last]
    # One unused byte before the last tensor, the file one byte longer: nothing else is off.
    header[last]["data_offsets"] = [begin + 1, end + 1]
    shifted = data[:begin] + b"\0" + data[begin:]
    with pytest.raises(FormatError, match=rf"bytes {begin}\.\.{begin + 1} before '{last}'"):
        parse(join(header, shifted))


def test_tensor_past_the_end_of_a_truncated_file_is_refused() -> None:
    blob = small_file()
    with pytest.raises(FormatError, match="past the"):
        parse(blob[:-1])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(FormatError, match="1 bytes after the last tensor"):
        parse(small_file() + b"\0")


def test_file_shorter_than_the_length_prefix() -> None:
    for blob in (b"", b"\x10\x00\x00"):
        with pytest.raises(FormatError, match="shorter than the 8-byte"):
            parse(blob)


@pytest.mark.parametrize("length", [0, 1])
def test_header_length_too_small(length: int) -> None:
    with pytest.raises(FormatError, match="too small"):
        parse(struct.pack("<Q", length) + b"{}")


def test_header_length_over_the_limit() -> None:
    with pytest.raises(FormatError, match="exceeds the limit"):
        parse(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}")


def test_header_length_past_the_end_of_the_file() -> None:
    with pytest.raises(FormatError, match="runs past the end"):
        parse(struct.pack("<Q", 100) + b"{}")


def test_stream_shorter_than_the_size_claimed() -> None:
    blob = small_file()
    with pytest.raises(FormatError, match="ends inside"):
        read_header(io.BytesIO(blob[:20]), len(blob))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"a": 1}]', "does not start with a JSON object"),
        (' {"a": 1}', "does not start with a JSON object"),
        ('{"a": ', "not valid JSON"),
        ('{"__metadata__": {"a": "b"}} trailing', "not valid JSON"),
        ('{"__metadata__": {"a": NaN}}', "non-JSON constant"),
        ('{"__metadata__": {}, "__metadata__": {}}', "twice"),
        ("{" * 100_000 + "}" * 100_000, "not valid JSON"),
    ],
)
def test_header_that_is_not_a_json_object(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse(raw_file(text))


def test_duplicate_tensor_names_are_refused() -> None:
    spec = json.dumps({"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})
    with pytest.raises(FormatError, match="twice"):
        parse(raw_file(f'{{"t": {spec}, "t": {spec}}}', b"\x01"))


def test_header_that_is_not_utf8() -> None:
    with pytest.raises(FormatError, match="not UTF-8"):
        parse(join(b'{"\xff": 1}', b""))


def test_header_padding_with_spaces_is_accepted() -> None:
    # safetensors pads the header with spaces up to 8-byte alignment.
    spec = {"t": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}
    header = parse(join(json.dumps(spec).encode() + b"      ", b"\x01\x02"))
    assert header.tensors[0].shape == (2,)
