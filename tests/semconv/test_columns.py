"""Packed columns keep every value bit for bit, refuse what is not a whole column, and the
README's table lists exactly the codec's dtypes."""

from __future__ import annotations

import base64
import math
import re
import struct
from array import array
from pathlib import Path

import pytest

from provtel.semconv import attributes as sc
from provtel.semconv import columns

README = Path(__file__).resolve().parents[2] / "semconv" / "README.md"
ODD_FLOATS = [0.1, -0.0, 0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, 1e-9]


def bits(values: list[float] | list[int]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def test_floats_round_trip_bit_for_bit() -> None:
    text = columns.encode(ODD_FLOATS)
    assert text.startswith("<f8:9:")
    back = columns.decode(text)
    assert bits(back) == bits(ODD_FLOATS)  # NaN, -0.0 and the extremes too
    assert all(type(v) is float for v in back)


def test_int64_round_trip_and_inference() -> None:
    times = [1_764_590_000_000_000_000 + 499_999 * i for i in range(1000)]
    text = columns.encode(times)
    assert text.startswith("<i8:1000:")
    assert columns.decode(text) == times
    assert columns.decode(columns.encode([-(2**63), 2**63 - 1])) == [-(2**63), 2**63 - 1]
    assert columns.decode(columns.encode([-1, 8, 8])) == [-1, 8, 8]


def test_a_float_column_may_hold_ints_and_is_float64() -> None:
    assert columns.encode([1, 0.5]).startswith("<f8:2:")
    assert columns.decode(columns.encode([1, 2], columns.FLOAT64)) == [1.0, 2.0]


def test_arrays_and_bytes_are_packed_as_they_are() -> None:
    floats = array("d", ODD_FLOATS)
    assert columns.encode(floats) == columns.encode(ODD_FLOATS)
    assert columns.encode(floats.tobytes(), columns.FLOAT64) == columns.encode(ODD_FLOATS)
    ints = array("q", [3, 4])
    assert columns.encode(ints) == columns.encode([3, 4])
    assert columns.decode_array(columns.encode(ints)) == ints


def test_the_format_is_numpy_readable_base64_of_little_endian_values() -> None:
    tag, count, data = columns.encode([1.5, -2.0]).split(":")
    assert (tag, count) == ("<f8", "2")
    assert base64.b64decode(data) == struct.pack("<2d", 1.5, -2.0)
    assert columns.encode([]) == "<i8:0:"
    assert columns.decode("<f8:0:") == []


@pytest.mark.parametrize("values", [[None, 1.0], ["1"], [2**63], [1.0, "x"]])
def test_what_cannot_be_packed_is_refused(values: list[object]) -> None:
    with pytest.raises((TypeError, ValueError, OverflowError)):
        columns.encode(values)  # type: ignore[arg-type]


def test_bytes_need_a_dtype_and_whole_values() -> None:
    with pytest.raises(ValueError):
        columns.encode(b"\0" * 8)
    with pytest.raises(ValueError):
        columns.encode(b"\0" * 7, columns.INT64)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "<f4:1:AAAAAA==",
        "<f8:x:AAAAAAAAAAA=",
        "<f8:2:AAAAAAAAAAA=",  # one value where two are announced
        "<f8:1:AAAA*AAAAAA=",
        "<f8:1:AAAAAAAAAAA",  # padding cut off
    ],
)
def test_what_is_not_a_whole_column_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        columns.decode(text)


def test_a_column_cut_short_is_refused_at_any_length() -> None:
    text = columns.encode([float(i) for i in range(40)])
    for end in range(len(text)):
        with pytest.raises(ValueError):
            columns.decode(text[:end])


def test_names() -> None:
    assert columns.packed_name(sc.ML_STEP_LOSS) == "ml.step.loss.packed"
    assert columns.array_name("ml.step.loss.packed") == sc.ML_STEP_LOSS
    assert columns.array_name(sc.ML_STEP_LOSS) is None
    assert columns.array_name(".packed") is None


def test_readme_table_lists_the_codec() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Packed columns\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "semconv/README.md has a '## Packed columns' section"
    body = match.group(1)
    assert f"`{columns.PACKED_SUFFIX}`" in body
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([^`]+)`", cells[0]) if cells else None
        if name:
            rows[name.group(1)] = cells[-1].strip("`")
    assert rows == columns.DTYPES
