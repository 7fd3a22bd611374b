"""OpenTelemetry attribute values and names -> PROV-JSON literals and QName-safe local names."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

_INT64 = 2**63
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
# XML 1.0 forbids these characters; PROV-XML and PROV-O exports would fail on them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def local_name(text: str, limit: int = 120) -> str:
    """Return ``text`` as an XML-QName-safe local name (``[A-Za-z_][A-Za-z0-9_.-]*``).

    Safe for PROV-N, PROV-XML and Turtle: no leading digit, no trailing dot, bounded length.
    """
    name = _UNSAFE.sub("_", text)[:limit] or "_"
    if not (name[0].isascii() and (name[0].isalpha() or name[0] == "_")):
        name = "_" + name
    if name.endswith("."):
        name += "_"
    return name


class UniqueNames:
    """Hands out unique names: ``x``, then ``x_2``, ``x_3`` ... for each name asked again.

    Each name is found in amortised O(1) (a counter per name, not a scan), and the search
    always ends: with a ``limit``, the name is cut to make room for its suffix, so a suffix can
    never be truncated away (names that differ only beyond the limit still get distinct ids).
    Names passed in should already be safe (:func:`local_name`).
    """

    __slots__ = ("_next", "_taken", "limit")

    def __init__(self, limit: int | None = 120) -> None:
        self.limit = limit
        self._taken: set[str] = set()
        self._next: dict[str, int] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._taken

    def reserve(self, name: str) -> None:
        """Mark ``name`` as taken (restored from disk, or the caller's own)."""
        self._taken.add(name)

    def take(self, name: str) -> str:
        """A name not handed out before: ``name`` itself when free."""
        if self.limit is not None:
            name = name[: self.limit]
        if name not in self._taken:
            self._taken.add(name)
            return name
        n = self._next.get(name, 1)
        while True:
            n += 1
            suffix = f"_{n}"
            head = name if self.limit is None else name[: self.limit - len(suffix)]
            candidate = head + suffix
            if candidate not in self._taken:
                break
        self._next[name] = n
        self._taken.add(candidate)
        return candidate


def clean_string(text: str) -> str:
    """Make a string representable in every PROV serialisation.

    Characters XML cannot carry (control characters, lone surrogates) are written as
    ``\\uXXXX`` text, so nothing is silently dropped.
    """
    if _XML_INVALID.search(text) is None:
        return text
    return _XML_INVALID.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _non_finite(value: float) -> dict[str, str]:
    lexical = "NaN" if math.isnan(value) else ("INF" if value > 0 else "-INF")
    return {"$": lexical, "type": "xsd:double"}


def _json_default(value: Any) -> Any:
    return str(value)


def literal(value: Any) -> Any:
    """Convert an attribute value to a PROV-JSON value.

    Strings, booleans and finite numbers stay JSON scalars; NaN and infinities become typed
    ``xsd:double`` literals (JSON has no such numbers); integers beyond 64 bits become typed
    ``xsd:integer``. Sequences and mappings become one JSON string, because a PROV-JSON array
    is a *set* of values and would lose order and duplicates.
    """
    if isinstance(value, str):
        return clean_string(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -_INT64 <= value < _INT64:
            return value
        return {"$": str(value), "type": "xsd:integer"}
    if isinstance(value, float):
        return value if math.isfinite(value) else _non_finite(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (Sequence, Mapping)):
        return clean_string(json.dumps(_plain(value), ensure_ascii=False, default=_json_default))
    return clean_string(str(value))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf": JSON has no literal for them
    return value


_last_second = -1
_last_prefix = ""


def iso_time(unix_nano: int) -> str:
    """Format nanoseconds since the Unix epoch as xsd:dateTime in UTC with microseconds."""
    global _last_second, _last_prefix
    seconds, nanos = divmod(int(unix_nano), 1_000_000_000)
    if seconds != _last_second:
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = seconds
    return f"{_last_prefix}.{nanos // 1000:06d}Z"
