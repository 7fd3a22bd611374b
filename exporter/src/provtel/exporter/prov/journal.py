"""The run journal, ``journal.jsonl``: the one place that writes and reads its lines.

The in-process exporter, ``provtel serve``, ``provtel recover`` and ``provtel merge`` all use
this module, so there is one line format and one record type (:class:`Record`), produced by
:func:`decode` and nowhere else.

Format: UTF-8 JSON, one object per line, its type first: ``{"t":"resource",...}``,
``{"t":"series",...}``, ``{"t":"span",...}``, ``{"t":"otlp_spans","data":"<base64>"}`` or,
in the receiver's pending files, ``{"t":"points",...}`` (the span fields are those of
:mod:`provtel.exporter.prov.records`, with ``resource`` the id of a resource record). NaN and
infinities are written as ``NaN``/``Infinity`` (as Python's ``json`` writes and reads them);
lone surrogates in strings survive (``surrogatepass``).

``otlp_spans`` is how ``provtel serve`` journals spans: the OTLP protobuf it received (an
encoded ``TracesData`` holding the spans of one trace, checked at ingest), base64 in one line,
with the ``resource`` records of its resources written before it in the same append. Converting
OTLP to span records is most of a span's cost, so the receiver leaves it to whoever reads the
journal (finalisation, recovery, merge): :func:`read` yields such a line as the ``span``
records it holds (:func:`spans_of`), each with ``resource`` the id of its resource record, so a
reader never sees the difference.

Encoding is on the receiver's hot path, so lines are written by orjson (about ten times faster
than ``json.dumps``) and by the standard encoder only for what orjson cannot write exactly: a
record holding a non-finite float (orjson would write ``null``), an integer beyond 64 bits, a
lone surrogate or a key that is not a string. Both write the same JSON values, so a reader
cannot tell (nor needs to) which one wrote a line.

Writing (:class:`JournalWriter`): each batch of lines is one ``write``, cut back whole when it
fails or lands partially (:class:`~provtel.exporter.prov.files.AppendFile`); opening an existing
journal cuts a torn last line first. Reading (:func:`read`): streams bytes, never decodes more
than one line at a time, skips a torn last line silently and every line that is not a valid
record with a ``line N: reason`` problem -- never an exception for what is in the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import operator
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from provtel.exporter.prov.files import AppendFile, RawFile, cut_torn_tail

logger = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
RESOURCE = "resource"
SERIES = "series"
SPAN = "span"
#: Spans as the receiver got them: an encoded OTLP ``TracesData``, base64 (``data``).
OTLP_SPANS = "otlp_spans"
#: Metric points of one resource waiting for their run (the receiver's ``.pending`` files).
POINTS = "points"
#: Longest journal line read; longer ones are skipped as a problem (a span is at most a
#: receiver request, 4 MiB of protobuf by default).
MAX_LINE_BYTES = 64 * 1024 * 1024
_FSYNC_INTERVAL_S = 1.0
_TIME_LIMIT = 2**63  # nanoseconds: what OTLP's fixed64 times and datetime both hold
_SERIES_PATH = re.compile(r"metrics/[A-Za-z0-9_][A-Za-z0-9_.\-]*\.csv")


class JournalError(ValueError):
    """A journal line that is not a record (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One journal record: its type (``resource``, ``series``, ``span``) and its fields."""

    kind: str
    data: dict[str, Any]


# The exact encoder (NaN/Infinity, big integers, lone surrogates, any key); one instance, as
# json.dumps with arguments builds a new encoder per call.
_EXACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
# Dataclasses and datetimes go to _default (str()), as the exact encoder writes them.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_LEAVES = frozenset({str, int, bool, type(None)})


class _NotExact(Exception):
    """orjson cannot write this value as the exact encoder does."""


def _default(obj: Any) -> Any:
    if isinstance(obj, float):  # a float subclass (numpy.float64): a number, as json writes it
        if math.isfinite(obj):
            return float(obj)
        raise _NotExact
    return str(obj)


def _non_finite(values: Any) -> bool:
    """Whether a NaN or infinite float is among ``values`` or inside them (dicts, lists,
    tuples), which orjson would write as ``null``."""
    if not values:
        return False
    types = set(map(type, values))  # one pass in C: most containers hold only leaves
    if types <= _LEAVES:
        return False
    if types == {float}:
        total = sum(values)  # NaN or inf in, NaN or inf out (or a finite overflow: exact anyway)
        return total - total != 0.0
    for value in values:
        if type(value) in _LEAVES:
            continue
        if isinstance(value, float):
            if value - value != 0.0:  # NaN for NaN and infinities, 0.0 for the rest
                return True
        elif isinstance(value, dict):
            if _non_finite(value.values()):
                return True
        elif isinstance(value, (list, tuple)) and _non_finite(value):
            return True
    return False


# A span record's fields (records.py) that hold no containers; ``None`` is common in them.
_SPAN_FIELDS = operator.itemgetter(
    "trace_id", "span_id", "parent_span_id", "parent_is_remote", "name", "kind", "start", "end",
    "status", "status_description",
)  # fmt: skip


def _known_nulls(kind: str, data: dict[str, Any]) -> int:
    """How many ``None`` the usual places of a record hold (checked in C, no walk)."""
    if kind != SPAN:
        return 0
    try:
        nulls = _SPAN_FIELDS(data).count(None)
    except KeyError:
        return 0
    scope = data.get("scope")
    if scope is None:
        return nulls + 1
    return nulls + list(scope.values()).count(None) if type(scope) is dict else nulls


def _fast(kind: str, data: dict[str, Any]) -> bytes | None:
    """orjson's encoding of ``data`` where it is exact, else None.

    orjson writes NaN and infinities as ``null``. Every ``null`` it writes is a ``None`` or such
    a float (or the text of a string), so when the ``null``s found equal the ``None``s counted in
    a record's usual places, there is no such float; only otherwise is the record walked."""
    try:
        out = orjson.dumps(data, default=_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:  # a big integer, a lone surrogate, a non-string key...
        return None
    nulls = out.count(b"null")
    if nulls and nulls != _known_nulls(kind, data) and _non_finite((data,)):
        return None
    return out


def encode(kind: str, data: dict[str, Any]) -> str:
    """The journal line (without its newline) of a record of type ``kind``."""
    out = _fast(kind, data)
    body = out.decode() if out is not None else _EXACT.encode(data)
    return f'{{"t":"{kind}"' + ("," + body[1:] if len(body) > 2 else "}")


def encode_otlp_spans(payload: bytes) -> str:
    """The journal line (without its newline) of an encoded OTLP ``TracesData`` (the spans
    :func:`spans_of` turns into span records when the journal is read)."""
    return '{"t":"otlp_spans","data":"' + base64.b64encode(payload).decode("ascii") + '"}'


def dumps(obj: Any) -> str:
    """The compact JSON of the standard encoder, for digests of values (resource and series
    identities): its output never changes with the encoder that writes the lines."""
    return _EXACT.encode(obj)


def resource_id(attributes: dict[str, Any]) -> str:
    """The journal id of a resource: a digest of its attributes."""
    text = dumps(sorted(attributes.items()))
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


# -- checks: what a record of each type must hold ---------------------------------------------


def _need(data: dict[str, Any], key: str, types: type | tuple[type, ...], what: str) -> None:
    value = data.get(key)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise JournalError(f"{key} must be {what}, not {_show(value)}")


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _time(data: dict[str, Any], key: str, optional: bool) -> None:
    value = data.get(key)
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _TIME_LIMIT:
        raise JournalError(f"{key} must be nanoseconds since 1970 (an integer), not {_show(value)}")


def _optional(data: dict[str, Any], key: str, types: type | tuple[type, ...], what: str) -> None:
    if data.get(key) is not None:
        _need(data, key, types, what)


def _check_span(data: dict[str, Any]) -> None:
    _need(data, "trace_id", str, "a hex trace id")
    _need(data, "span_id", str, "a hex span id")
    if not data["span_id"]:
        raise JournalError("span_id must be a hex span id, not empty")
    _optional(data, "parent_span_id", str, "a hex span id")
    _time(data, "start", optional=False)
    _time(data, "end", optional=True)
    for key in ("name", "kind", "status", "status_description", "resource"):
        _optional(data, key, str, "a string")
    _optional(data, "attributes", dict, "an object")
    _optional(data, "scope", dict, "an object")
    for key in ("events", "links"):
        _optional(data, key, list, "a list")
        if not all(
            isinstance(e, dict) and isinstance(e.get("attributes", {}), dict)
            for e in data.get(key) or ()
        ):
            raise JournalError(f"{key} must be a list of objects with attributes")


def _check_resource(data: dict[str, Any]) -> None:
    _need(data, "id", str, "a string")
    _need(data, "attributes", dict, "an object")


def _check_series(data: dict[str, Any]) -> None:
    for key in ("key", "label", "relpath"):
        _need(data, key, str, "a string")
    if not _SERIES_PATH.fullmatch(data["relpath"]):
        raise JournalError(f"relpath must be metrics/<name>.csv, not {_show(data['relpath'])}")
    columns = data.get("columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise JournalError("columns must be a list of names")
    for key in ("context", "trace_id", "resource"):
        _optional(data, key, str, "a string")
    for key in ("source", "unit", "description"):
        _optional(data, key, str, "a string")
    _optional(data, "attributes", dict, "an object")
    known = {
        "key", "label", "context", "source", "unit", "relpath", "columns", "description",
        "attributes", "trace_id", "resource",
    }  # fmt: skip
    for extra in [k for k in data if k not in known]:
        del data[extra]  # written by a newer provtel: what this one does not know is ignored


def _check_points(data: dict[str, Any]) -> None:
    _need(data, "resource", dict, "an object")
    _need(data, "points", list, "a list")
    for point in data["points"]:
        if not isinstance(point, dict):
            raise JournalError("points must be objects")
        for key in ("name", "type", "unit", "description"):
            _need(point, key, str, "a string")
        _need(point, "attributes", dict, "an object")
        _time(point, "time", optional=True)
        _time(point, "start", optional=True)
        if point["type"] in ("histogram", "exponentialhistogram"):
            missing = [k for k in ("count", "sum", "min", "max") if k not in point]
        else:
            missing = [k for k in ("value",) if k not in point]
        if missing:
            raise JournalError(f"a {point['type']} point needs {', '.join(missing)}")


def _check_otlp_spans(data: dict[str, Any]) -> None:
    _need(data, "data", str, "base64")
    try:
        data["data"] = base64.b64decode(data["data"], validate=True)
    except (binascii.Error, ValueError):
        raise JournalError("data must be base64 (of OTLP protobuf)") from None


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    SPAN: _check_span,
    OTLP_SPANS: _check_otlp_spans,
    RESOURCE: _check_resource,
    SERIES: _check_series,
    POINTS: _check_points,
}


def _constant(name: str) -> float:
    return float(name)  # NaN, Infinity, -Infinity: what json.dumps writes for them


def decode(line: bytes) -> Record:
    """The record of one journal line; :class:`JournalError` (with the reason) otherwise."""
    try:
        text = line.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise JournalError(f"not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_constant=_constant)
    except RecursionError:
        raise JournalError("nested too deeply") from None
    except ValueError as exc:
        raise JournalError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise JournalError(f"not a journal record (a JSON {type(obj).__name__})")
    kind = obj.pop("t", None)
    check = _CHECKS.get(kind) if isinstance(kind, str) else None
    if check is None:
        raise JournalError(f"not a journal record (type {_show(kind)})")
    check(obj)
    return Record(kind, obj)


def read(
    path: Path,
    problems: list[str] | None = None,
    kinds: Collection[str] | None = None,
) -> Iterator[Record]:
    """The records of a journal, in order.

    A last line without its newline (torn by a kill or a full disk) is skipped silently. Every
    other line that is not a valid record is skipped, and ``line N: reason`` goes to
    ``problems`` (or, without a list, is logged as a warning). ``kinds`` limits what is decoded:
    span lines, most of a journal, are skipped unread when spans are not wanted. An
    ``otlp_spans`` line is yielded as its span records (:func:`spans_of`); one that does not
    decode as OTLP is a problem as any other.
    """
    skip_spans = kinds is not None and SPAN not in kinds
    with open(path, "rb") as src:
        lineno = 0
        while True:
            line = src.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            lineno += 1
            if not line.endswith(b"\n"):
                if len(line) <= MAX_LINE_BYTES:
                    logger.debug("provtel: %s ends with a torn line; skipped", path)
                    return
                while line and not line.endswith(b"\n"):  # skip the rest, a block at a time
                    line = src.readline(1 << 20)
                _problem(problems, path, lineno, f"longer than {MAX_LINE_BYTES >> 20} MiB")
                continue
            if skip_spans and line.startswith((b'{"t":"span"', b'{"t":"otlp_spans"')):
                continue
            if line.strip() == b"":
                continue
            try:
                record = decode(line)
            except JournalError as exc:
                _problem(problems, path, lineno, str(exc))
                continue
            if record.kind == OTLP_SPANS:
                del line
                found: list[str] = []
                yield from spans_of(record, found)
                for reason in found:
                    _problem(problems, path, lineno, reason)
            elif kinds is None or record.kind in kinds:
                yield record


def spans_of(record: Record, problems: list[str] | None = None) -> Iterator[Record]:
    """The ``span`` records of an ``otlp_spans`` record, as the receiver would have journaled
    them (``resource``: the id of the resource record). Nothing when its data is not OTLP, and
    spans OTLP's checks reject are left out; the reason goes to ``problems`` either way."""
    from provtel.exporter.prov import otlp  # only a receiver's journal holds these lines

    try:
        request = otlp.parse_protobuf(record.data["data"], otlp.SpansRequest)
        batch = otlp.convert_spans(request)
    except (otlp.OtlpError, RecursionError) as exc:
        if problems is not None:
            problems.append(f"not OTLP spans ({exc})")
        return
    del request
    if batch.rejected and problems is not None:
        problems.append(f"{batch.rejected} span(s) left out: {batch.error}")
    ids: dict[int, tuple[dict[str, Any], str]] = {}  # the request's resources, by identity
    for rec in batch.records:
        resource = rec["resource"]
        known = ids.get(id(resource))
        if known is None:
            known = ids[id(resource)] = (resource, resource_id(resource))
        rec["resource"] = known[1]
        yield Record(SPAN, rec)


def _problem(problems: list[str] | None, path: Path, lineno: int, reason: str) -> None:
    if problems is None:
        logger.warning("provtel: %s line %d skipped: %s", path, lineno, reason)
    else:
        problems.append(f"line {lineno}: {reason}")


class JournalWriter:
    """Appends records to a journal; not thread-safe (the run store serialises)."""

    def __init__(self, path: Path, raw: RawFile | None = None) -> None:
        self.path = path
        if raw is None:
            cut = cut_torn_tail(path)
            if cut:
                logger.info("provtel: cut a torn last line (%d bytes) off %s", cut, path)
        self._file: AppendFile | None = AppendFile(path, raw)
        self._last_sync = time.monotonic()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._file is None

    def append(self, lines: list[str]) -> None:
        """Append lines made by :func:`encode`, all or none; raises the ``OSError`` of a
        failed write (the journal is then as it was before the call)."""
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.append(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
        now = time.monotonic()
        if now - self._last_sync >= _FSYNC_INTERVAL_S:  # a power cut keeps what was synced
            self._file.sync()
            self._last_sync = now

    def close(self, sync: bool = True) -> None:
        """Close the journal (``fsync`` first when ``sync``). Idempotent."""
        if self._file is None:
            return
        out, self._file = self._file, None
        try:
            if sync:
                out.sync()
        finally:
            out.close()
