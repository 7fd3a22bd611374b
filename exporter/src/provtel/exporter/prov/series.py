"""Metric series files beside the PROV document: CSV, float64-lossless, readable by pandas.

A PROV-JSON array is a set, so series never go inside the document; each (metric, context)
is one CSV file referenced from a ``provml:Metric`` entity by ``dcterms:identifier``. Floats are
written with ``repr`` (shortest round-trip form), so ``pandas.read_csv`` gives back the exact
float64 values. The columns keep yProv4ML's ``epoch,value,timestep`` (timestep = Unix ms).

Two kinds of series, written two ways:

* **metric points** (a few rows per collection) are appended to their CSV as they arrive;
* **per-step series** (thousands of rows per block) are spooled while the run goes, in binary,
  to ``metrics/<name>.csv.steps`` beside the CSV they become: one record per block and series,
  the block's columns as little-endian arrays (no per-cell text formatting on the export
  thread: formatting a float costs ~0.5-1 µs, a block of ten series ~10k cells). The CSV is
  written from the spool, in one pass, when the document is written (finalisation, ``provtel
  recover``); the spool is then removed. While a spool exists, the CSV is a function of it alone
  (writing it again gives the same bytes), so a process killed at any moment leaves a record
  that recovery turns into the same CSV.

Spool record (all little-endian): a 32-byte header ``b"PS"``, kind (1: columns, 2: text rows),
dtype (``d``/``q`` for columns), first step (int64), row count, start-time count, epoch cell
length, payload length, CRC-32 of the payload (uint32 each); the payload is the epoch cell
(UTF-8), the start times (int64 Unix ns, ``-2**63`` where unknown) and the values (float64 or
int64) -- or, for text rows (logged values, arrays of unusual types), the CSV rows themselves.
A record that is torn or fails its CRC ends the readable spool (a kill or a full disk can only
tear the last one; :func:`repair_spool` cuts it before more is appended).
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from provtel.exporter.prov.files import OpenFiles, open_private

#: Columns of a per-step series (values from step-block spans).
STEP_COLUMNS = ("step", "epoch", "value", "timestep", "time_unix_nano")
#: Columns of a series of OpenTelemetry metric data points.
POINT_COLUMNS = ("time_unix_nano", "start_time_unix_nano", "value", "timestep")
#: Columns of a series of histogram data points.
HISTOGRAM_COLUMNS = (
    "time_unix_nano",
    "start_time_unix_nano",
    "count",
    "sum",
    "min",
    "max",
    "value",
    "timestep",
)
#: Suffix of a per-step series' spool: ``metrics/loss_training.csv.steps``.
SPOOL_SUFFIX = ".steps"
#: A start time that is not known (the spool's int64 column has no empty cell).
MISSING_START = -(2**63)

_HEADER = struct.Struct("<2sBBqIIIII")
_MAGIC = b"PS"
_COLUMNS, _TEXT = 1, 2
_SWAP = sys.byteorder != "little"
_MAX_PAYLOAD = 1 << 31


def _line(row: Sequence[Any]) -> str:
    # Cells are numbers or None; str(float) is its shortest round-trip form ('nan' and 'inf'
    # read back as NaN / inf), and "None" cannot appear otherwise, so it marks empty cells.
    return ",".join(map(str, row)).replace("None", "")


@dataclass(frozen=True, slots=True)
class StepRows:
    """The rows of one series taken off one step-block span (:data:`STEP_COLUMNS`).

    Either columns -- ``values`` an ``array('d')``/``array('q')``, row ``i`` being step
    ``first + i`` of ``epoch`` started at ``starts[i]`` (Unix ns; :data:`MISSING_START` or past the
    end of ``starts``: unknown) -- or ``lines``, rows already formatted (logged values, arrays
    of unusual types), with their ``values`` for the summary.
    """

    values: Sequence[Any]
    first: int = 0
    epoch: str = ""
    starts: array | None = None
    lines: list[str] | None = None

    def __len__(self) -> int:
        return len(self.lines) if self.lines is not None else len(self.values)

    def text(self) -> str:
        """The CSV rows (each ending with a newline)."""
        if self.lines is not None:
            return "".join(line + "\n" for line in self.lines)
        return _columns_text(self.first, self.epoch, self.starts, self.values)

    def record(self) -> bytes:
        """The spool record of these rows."""
        epoch = self.epoch.encode("utf-8", "surrogatepass")
        if self.lines is not None:
            text = self.text()
            payload = text.encode("utf-8", "surrogatepass")
            return _pack(_TEXT, 0, 0, text.count("\n"), 0, b"", payload)
        values = self.values
        assert isinstance(values, array)
        starts = self.starts if self.starts is not None else array("q")
        if len(starts) > len(values):
            starts = starts[: len(values)]
        if _SWAP:  # pragma: no cover - big-endian hosts
            values, starts = _swapped(values), _swapped(starts)
        payload = epoch + starts.tobytes() + values.tobytes()
        code = ord(values.typecode)
        return _pack(_COLUMNS, code, self.first, len(values), len(starts), epoch, payload)


def _pack(
    kind: int, code: int, first: int, n: int, n_starts: int, epoch: bytes, payload: bytes
) -> bytes:
    crc = zlib.crc32(payload)
    return (
        _HEADER.pack(_MAGIC, kind, code, first, n, n_starts, len(epoch), len(payload), crc)
        + payload
    )


def _swapped(values: array) -> array:  # pragma: no cover - big-endian hosts
    out = array(values.typecode, values)
    out.byteswap()
    return out


@lru_cache(maxsize=64)
def _row_format(n: int, epoch: str, value: str) -> str:
    return ("%d," + epoch.replace("%", "%%") + "," + value + ",%d,%d\n") * n


def _columns_text(first: int, epoch: str, starts: array | None, values: Sequence[Any]) -> str:
    n = len(values)
    if not n:
        return ""
    value = "%r" if isinstance(values, array) and values.typecode == "d" else "%d"
    starts = starts if starts is not None else array("q")
    if len(starts) >= n and MISSING_START not in starts[:n]:
        # One C-level format of the whole block: the fastest text CPython makes.
        start = starts[:n] if len(starts) > n else starts
        flat: list[Any] = [None] * (4 * n)
        flat[0::4] = range(first, first + n)
        flat[1::4] = values
        flat[2::4] = [s // 1_000_000 for s in start]
        flat[3::4] = start
        return _row_format(n, epoch, value) % tuple(flat)
    rows = []
    head = f",{epoch},"
    for i, v in enumerate(values):
        s = starts[i] if i < len(starts) else MISSING_START
        tail = f",{s // 1_000_000},{s}" if s != MISSING_START else ",,"
        rows.append(f"{first + i}{head}{value % v}{tail}\n")
    return "".join(rows)


@dataclass(frozen=True, slots=True)
class _Record:
    rows: StepRows
    end: int  # offset just past the record


def read_spool(path: Path) -> Iterator[_Record]:
    """The readable records of a spool, in order (stops at a torn or damaged record)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    view = memoryview(data)
    at = 0
    size = _HEADER.size
    while at + size <= len(data):
        magic, kind, code, first, n, n_starts, n_epoch, n_payload, crc = _HEADER.unpack_from(
            data, at
        )
        body = at + size
        if magic != _MAGIC or body + n_payload > len(data):
            return
        payload = view[body : body + n_payload]
        if zlib.crc32(payload) != crc:
            return
        try:
            rows = _rows(kind, code, first, n, n_starts, n_epoch, payload)
        except (ValueError, UnicodeDecodeError):
            return
        at = body + n_payload
        yield _Record(rows, at)


def _rows(
    kind: int, code: int, first: int, n: int, n_starts: int, n_epoch: int, payload: memoryview
) -> StepRows:
    if kind == _TEXT:
        text = bytes(payload).decode("utf-8", "surrogatepass")
        lines = text.split("\n")[:-1]
        if len(lines) != n:
            raise ValueError("row count")
        return StepRows(values=[_value_cell(line) for line in lines], lines=lines)
    if (
        kind != _COLUMNS
        or chr(code) not in ("d", "q")
        or n_epoch + 8 * (n + n_starts) != len(payload)
    ):
        raise ValueError("not a columns record")
    epoch = bytes(payload[:n_epoch]).decode("utf-8", "surrogatepass")
    starts = array("q")
    starts.frombytes(payload[n_epoch : n_epoch + 8 * n_starts])
    values = array(chr(code))
    values.frombytes(payload[n_epoch + 8 * n_starts :])
    if _SWAP:  # pragma: no cover - big-endian hosts
        starts.byteswap()
        values.byteswap()
    return StepRows(values=values, first=first, epoch=epoch, starts=starts)


def _value_cell(line: str) -> float | None:
    cells = line.split(",")
    try:
        return _parse(cells[2]) if len(cells) == len(STEP_COLUMNS) else None
    except ValueError:
        return None


def repair_spool(path: Path) -> int:
    """Cut a torn or damaged tail off a spool (before appending to it again); return the
    number of bytes cut."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    end = 0
    for record in read_spool(path):
        end = record.end
    if end < size:
        with open(path, "r+b") as f:
            f.truncate(end)
    return size - end


@dataclass(slots=True)
class SeriesStats:
    """Running summary of a series' ``value`` column (NaN counted, not compared)."""

    count: int = 0
    first: float | None = None
    last: float | None = None
    minimum: float | None = None
    maximum: float | None = None

    def add_many(self, values: Sequence[Any]) -> None:
        """Add a batch of values (the hot path: one pass in C where possible)."""
        if isinstance(values, array):
            present: Sequence[Any] = values  # no None in an array
        else:
            present = [v for v in values if v is not None]
        if not present:
            return
        self.count += len(present)
        if self.first is None:
            self.first = present[0]
        self.last = present[-1]
        if isinstance(present, array) and present.typecode == "q":
            comparable: Sequence[Any] = present
        elif isinstance(present, array) and _no_nan(present):
            comparable = present
        else:
            comparable = [v for v in present if v == v]  # NaN is counted, not compared
        if comparable:
            low, high = min(comparable), max(comparable)
            if self.minimum is None or low < self.minimum:
                self.minimum = low
            if self.maximum is None or high > self.maximum:
                self.maximum = high

    def add(self, value: float | None) -> None:
        """Add one value."""
        if value is None:
            return
        self.count += 1
        if self.first is None:
            self.first = value
        self.last = value
        if isinstance(value, float) and math.isnan(value):
            return
        if self.minimum is None or value < self.minimum:
            self.minimum = value
        if self.maximum is None or value > self.maximum:
            self.maximum = value


def _no_nan(values: array) -> bool:
    total = sum(values)  # NaN anywhere (or inf - inf) makes the sum NaN: then look closer
    return total == total


@dataclass(slots=True)
class Series:
    """One series file: its identity, its columns and its running summary."""

    key: str
    label: str
    context: str | None
    source: str
    unit: str
    relpath: str
    columns: tuple[str, ...]
    description: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    resource: str | None = None
    stats: SeriesStats = field(default_factory=SeriesStats)

    @property
    def spooled(self) -> bool:
        """Whether the series is a per-step series (spooled while the run goes)."""
        return self.columns == STEP_COLUMNS

    def spool_path(self, root: Path) -> Path:
        """Where the series' spool is (per-step series)."""
        return root / (self.relpath + SPOOL_SUFFIX)

    def append(
        self, root: Path, rows: Iterable[Sequence[Any]], files: OpenFiles | None = None
    ) -> None:
        """Append rows (tuples in ``columns`` order) to the CSV file under ``root``."""
        rows = list(rows)
        if not rows:
            return
        value_at = self.columns.index("value")
        data = ("\n".join(map(_line, rows)) + "\n").encode()
        header = (",".join(self.columns) + "\n").encode()
        # Whole rows or none (a full disk never leaves half a row for the next one to extend);
        # first: a refused write counts nothing.
        (files or OpenFiles(0)).append(root / self.relpath, data, header)
        self.stats.add_many([row[value_at] for row in rows])

    def append_steps(self, root: Path, rows: StepRows, files: OpenFiles | None = None) -> None:
        """Append a block's rows of a per-step series to its spool (one write)."""
        if not len(rows):
            return
        (files or OpenFiles(0)).append(self.spool_path(root), rows.record())
        self.stats.add_many(rows.values)

    def rescan(self, root: Path) -> None:
        """Rebuild the summary from the spool, or else the file (when recovering a journal)."""
        self.stats = SeriesStats()
        spool = self.spool_path(root)
        if self.spooled and spool.exists():
            for record in read_spool(spool):
                self.stats.add_many(record.rows.values)
            return
        path = root / self.relpath
        if not path.exists():
            return
        with open(path, encoding="utf-8", errors="replace") as src:
            header = src.readline().rstrip("\n").split(",")
            if "value" not in header:
                return
            at = header.index("value")
            for line in src:
                if not line.endswith("\n"):
                    break  # a row torn by a crash or a full disk: not part of the record
                cells = line.rstrip("\n").split(",")
                if len(cells) != len(header):
                    continue
                try:
                    self.stats.add(_parse(cells[at]))
                except ValueError:
                    continue

    def adopt_csv(self, root: Path) -> None:
        """Move the rows of a per-step series' CSV (written by an older provtel) into a new
        spool, so that the CSV is again a function of the spool (continuing such a run)."""
        path, spool = root / self.relpath, self.spool_path(root)
        if not self.spooled or spool.exists() or not path.exists():
            return
        with open(path, encoding="utf-8", errors="surrogateescape") as src:
            src.readline()
            lines = [line.rstrip("\n") for line in src if line.endswith("\n")]
        if not lines:
            return
        record = StepRows(values=[], lines=lines).record()
        tmp = spool.with_name(spool.name + f".tmp-{os.getpid()}")
        fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, record)
        finally:
            os.close(fd)
        os.replace(tmp, spool)

    def write_csv(self, root: Path, remove_spool: bool = True) -> None:
        """Write a per-step series' CSV from its spool (atomically; the same bytes every time),
        then remove the spool unless ``remove_spool`` is false (a rank another process may
        still be writing)."""
        spool = self.spool_path(root)
        if not self.spooled or not spool.exists():
            return
        path = root / self.relpath
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        written = False
        try:
            with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as out:
                for record in read_spool(spool):
                    if not written:
                        out.write((",".join(self.columns) + "\n").encode())
                        written = True
                    out.write(record.rows.text().encode("utf-8", "surrogatepass"))
            if written:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if remove_spool:
            spool.unlink(missing_ok=True)


def _parse(cell: str) -> float | None:
    if cell == "":
        return None
    try:
        return int(cell)
    except ValueError:
        return float(cell)
