"""Packed columns: a per-step array as ONE string attribute (stdlib only).

The OpenTelemetry SDK checks an array attribute element by element when a span is created
(``BoundedAttributes``: ~0.4 µs per element, ~4 ms for a block of 1000 steps and ten arrays) and
an exporter then walks it again. A packed column is one string, checked once, and still plain
OTLP, so the receiver gets it from remote ranks unchanged.

A column named ``<array name>.packed`` (:func:`packed_name`; e.g. ``ml.step.loss.packed``)
carries the same values as the array ``<array name>`` would, in the same order, as::

    <dtype>:<count>:<base64 of the little-endian values>

``<dtype>`` is ``<f8`` (IEEE 754 float64) or ``<i8`` (int64), numpy's spelling, so
``numpy.frombuffer(base64.b64decode(data), dtype)`` reads one too; ``<count>`` is the number of
values, so a string cut short (an attribute value length limit) is refused, never read as fewer
values. Every float64 survives bit for bit (NaN, infinities, ``-0.0``). A reader that finds both
forms of one array uses the packed one.
"""

from __future__ import annotations

import binascii
import sys
from array import array
from collections.abc import Sequence

#: Suffix of a packed column's attribute name: ``ml.step.loss`` -> ``ml.step.loss.packed``.
PACKED_SUFFIX = ".packed"
#: dtype tag of float64 values.
FLOAT64 = "<f8"
#: dtype tag of int64 values.
INT64 = "<i8"
#: dtype tag -> :mod:`array` type code.
DTYPES: dict[str, str] = {FLOAT64: "d", INT64: "q"}
_TAGS = {code: tag for tag, code in DTYPES.items()}
_SWAP = sys.byteorder != "little"


def packed_name(name: str) -> str:
    """The attribute name of array ``name`` packed: ``name + PACKED_SUFFIX``."""
    return name + PACKED_SUFFIX


def array_name(key: str) -> str | None:
    """The array a packed column's attribute name stands for (None for other names)."""
    if key.endswith(PACKED_SUFFIX) and len(key) > len(PACKED_SUFFIX):
        return key[: -len(PACKED_SUFFIX)]
    return None


def encode(
    values: Sequence[float] | Sequence[int] | array | bytes, dtype: str | None = None
) -> str:
    """Pack values into a column string.

    ``values`` is a list (or tuple) of numbers, an ``array('d')``/``array('q')``, or ``bytes``
    already holding little-endian values of ``dtype``. Without ``dtype``, an array keeps its type,
    and a list is int64 when every element is an ``int`` (``bool`` included), else float64 (ints
    in a float column become floats: exact below 2**53). Raises ``TypeError``/``ValueError``/
    ``OverflowError`` for what cannot be packed (``None``, strings, ints beyond int64).
    """
    if isinstance(values, (bytes, bytearray, memoryview)):
        if dtype not in DTYPES:
            raise ValueError(f"bytes need a dtype, one of {sorted(DTYPES)}, not {dtype!r}")
        data = bytes(values)
        if len(data) % 8:
            raise ValueError(f"{len(data)} bytes are not a whole number of 8-byte values")
        return f"{dtype}:{len(data) // 8}:{binascii.b2a_base64(data, newline=False).decode()}"
    if isinstance(values, array):
        tag = _TAGS.get(values.typecode)
        if dtype is None and tag is not None:
            packed = values
        else:
            tag = dtype or FLOAT64
            packed = array(_code(tag), values)
    elif dtype is None:
        try:  # int64 when every element is an int: a float list fails at its first element
            tag, packed = INT64, array("q", values)
        except TypeError:
            tag, packed = FLOAT64, array("d", values)
    else:
        tag = dtype
        packed = array(_code(tag), values)
    if _SWAP:
        packed = array(packed.typecode, packed)
        packed.byteswap()
    data = packed.tobytes()
    return f"{tag}:{len(packed)}:{binascii.b2a_base64(data, newline=False).decode()}"


def _code(tag: str) -> str:
    code = DTYPES.get(tag)
    if code is None:
        raise ValueError(f"unknown dtype {tag!r}; one of {sorted(DTYPES)}")
    return code


def decode_array(text: str) -> array:
    """The values of a column string as an ``array('d')`` or ``array('q')``; ``ValueError`` for
    a string that is not a whole packed column."""
    if not isinstance(text, str):
        raise ValueError(f"a packed column is a string, not {type(text).__name__}")
    tag, sep, rest = text.partition(":")
    count, sep2, data = rest.partition(":")
    if not sep or not sep2 or tag not in DTYPES or not count.isdigit():
        raise ValueError(f"not a packed column: {text[:40]!r}")
    n = int(count)
    if len(data) != 4 * -(-8 * n // 3):  # padded base64 of 8n bytes, not a character more
        raise ValueError(f"a packed column of {count} values has {len(data)} base64 characters")
    try:
        # Not validate=True (a regex pass, 5x the decoding): a character outside the alphabet
        # is skipped, so the length check below refuses it.
        raw = binascii.a2b_base64(data)
    except binascii.Error as exc:
        raise ValueError(f"not a packed column: {exc}") from None
    if len(raw) != 8 * n:
        raise ValueError(f"a packed column of {count} values holds {len(raw)} bytes (cut short?)")
    out = array(DTYPES[tag])
    out.frombytes(raw)
    if _SWAP:
        out.byteswap()
    return out


def decode(text: str) -> list[float] | list[int]:
    """The values of a column string, as a list (:func:`decode_array` for the array)."""
    return decode_array(text).tolist()
