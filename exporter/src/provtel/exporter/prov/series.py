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

    def text(self, cells: BlockCells | None = None) -> str:
        """The CSV rows (each ending with a newline); ``cells`` shares the cells around the
        values between the series of one block."""
        if self.lines is not None:
            return "".join(line + "\n" for line in self.lines)
        n = len(self.values)
        if not n:
            return ""
        heads, tails = (cells or BlockCells(0)).get(self.first, self.epoch, self.starts, n)
        values: Sequence[Any] = self.values
        value = "%d"
        if isinstance(values, array) and values.typecode == "d":
            value, values = _float_cells(values)
        flat: list[Any] = [None] * (3 * n)
        flat[0::3] = heads
        flat[1::3] = values
        flat[2::3] = tails
        # One C-level format of the whole block: the fastest text CPython makes.
        return _row_format(n, value) % tuple(flat)

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


def _float_cells(values: array) -> tuple[str, Sequence[Any]]:
    """How to format a float column: ``%r`` of each value, or -- when few values repeat
    (a constant learning rate) -- ``%s`` of their ``repr`` formatted once each. Values are
    told apart by their bits, so ``-0.0`` and NaN keep their own text."""
    bits = array("q")
    bits.frombytes(values.tobytes())
    if len(set(bits[:64])) > 8 or len(set(bits)) > len(bits) // 8:  # a sample first: cheap
        return "%r", values
    text = {b: repr(v) for b, v in dict(zip(bits, values, strict=True)).items()}
    return "%s", list(map(text.__getitem__, bits))


@lru_cache(maxsize=64)
def _row_format(n: int, value: str) -> str:
    return ("%s" + value + "%s") * n


class BlockCells:
    """The step, epoch and time cells of recent blocks, formatted once and shared by the
    block's series (an int of 19 digits costs more to format than a float: these cells are
    most of the text)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._cells: dict[tuple[Any, ...], tuple[list[str], list[str]]] = {}

    def get(
        self, first: int, epoch: str, starts: array | None, n: int
    ) -> tuple[list[str], list[str]]:
        """``(heads, tails)`` of ``n`` rows: ``"<step>,<epoch>,"`` and ``",<ms>,<ns>\n"``
        (``",,\n"`` where the start time is unknown)."""
        times = starts[:n] if starts is not None else array("q")
        key = (first, epoch, n, times.tobytes())
        found = self._cells.pop(key, None)
        if found is None:
            heads = [f"{step},{epoch}," for step in range(first, first + n)]
            if len(times) == n and MISSING_START not in times:
                tails = [f",{t // 1_000_000},{t}\n" for t in times]
            else:
                tails = [
                    f",{t // 1_000_000},{t}\n" if t != MISSING_START else ",,\n" for t in times
                ]
                tails += [",,\n"] * (n - len(times))
            found = (heads, tails)
        self._cells[key] = found  # most recent last
        while len(self._cells) > self.size:
            del self._cells[next(iter(self._cells))]
        return found


@dataclass(frozen=True, slots=True)
class _Record:
    rows: StepRows
    end: int  # offset just past the record


def read_spool(path: Path) -> Iterator[_Record]:
    """The readable records of a spool, in order, one at a time (stops at a torn or damaged
    record)."""
    try:
        src = open(path, "rb")  # noqa: SIM115 - closed when the generator ends
    except FileNotFoundError:
        return
    with src:
        at = 0
        size = _HEADER.size
        while True:
            header = src.read(size)
            if len(header) < size:
                return
            magic, kind, code, first, n, n_starts, n_epoch, n_payload, crc = _HEADER.unpack(header)
            if magic != _MAGIC or n_payload > _MAX_PAYLOAD:
                return
            payload = src.read(n_payload)
            if len(payload) < n_payload or zlib.crc32(payload) != crc:
                return
            try:
                rows = _rows(kind, code, first, n, n_starts, n_epoch, memoryview(payload))
            except (ValueError, UnicodeDecodeError):
                return
            at += size + n_payload
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
    _paths: tuple[Path, Path, Path] | None = field(default=None, repr=False, compare=False)

    def _files(self, root: Path) -> tuple[Path, Path]:
        # (CSV, spool) under ``root``, built once: pathlib's parsing and hashing per append
        # would cost more than the write.
        paths = self._paths
        if paths is None or paths[0] is not root:
            csv = root / self.relpath
            paths = self._paths = (root, csv, csv.with_name(csv.name + SPOOL_SUFFIX))
        return paths[1], paths[2]

    @property
    def spooled(self) -> bool:
        """Whether the series is a per-step series (spooled while the run goes)."""
        return self.columns == STEP_COLUMNS

    def spool_path(self, root: Path) -> Path:
        """Where the series' spool is (per-step series)."""
        return self._files(root)[1]

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
        (files or OpenFiles(0)).append(self._files(root)[0], data, header)
        self.stats.add_many([row[value_at] for row in rows])

    def append_steps(self, root: Path, rows: StepRows, files: OpenFiles | None = None) -> None:
        """Append a block's rows of a per-step series to its spool (one write). The summary
        of a spooled series is made when its CSV is written (:func:`write_csvs`), off the
        export thread."""
        if not len(rows):
            return
        (files or OpenFiles(0)).append(self.spool_path(root), rows.record())

    def rescan(self, root: Path) -> None:
        """Rebuild the summary from the file (when recovering a journal); a series with a
        spool gets its summary when its CSV is written (:func:`write_csvs`)."""
        self.stats = SeriesStats()
        if self.spooled and self.spool_path(root).exists():
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
        """Write a per-step series' CSV from its spool (:func:`write_csvs`)."""
        write_csvs([self], root, remove_spool)


def write_csvs(series: Iterable[Series], root: Path, remove_spool: bool = True) -> None:
    """Write the CSV files of per-step series from their spools (atomically; the same bytes
    every time), then remove each spool unless ``remove_spool`` is false (a rank another
    process may still be writing). Series without a spool are left as they are.

    The spools are read side by side, a record of each in turn, so that the series of one
    block share its step and time cells (:class:`BlockCells`); at most ``_GROUP`` at a time.
    Each series' summary is made from the rows on the way.
    """
    todo = [s for s in series if s.spooled and s.spool_path(root).exists()]
    for at in range(0, len(todo), _GROUP):
        _write_group(todo[at : at + _GROUP], root, remove_spool)


_GROUP = 32


@dataclass(slots=True)
class _Conversion:
    series: Series
    spool: Path
    path: Path
    tmp: Path
    reader: Iterator[_Record]
    out: Any = None


def _write_group(group: list[Series], root: Path, remove_spool: bool) -> None:
    cells = BlockCells(16)
    active: list[_Conversion] = []
    try:
        for s in group:
            path = root / s.relpath
            tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
            s.stats = SeriesStats()
            active.append(
                _Conversion(s, s.spool_path(root), path, tmp, read_spool(s.spool_path(root)))
            )
        while active:
            for job in list(active):
                record = next(job.reader, None)
                if record is None:
                    active.remove(job)
                    _finish(job, remove_spool)
                    continue
                if job.out is None:
                    job.out = os.fdopen(open_private(job.tmp, os.O_WRONLY | os.O_TRUNC), "wb")
                    job.out.write((",".join(job.series.columns) + "\n").encode())
                job.out.write(record.rows.text(cells).encode("utf-8", "surrogatepass"))
                job.series.stats.add_many(record.rows.values)
    finally:
        for job in active:  # only when something failed
            if job.out is not None:
                with contextlib.suppress(OSError):
                    job.out.close()
            with contextlib.suppress(OSError):
                job.tmp.unlink(missing_ok=True)


def _finish(job: _Conversion, remove_spool: bool) -> None:
    if job.out is not None:
        try:
            job.out.close()
            os.replace(job.tmp, job.path)
        except BaseException:
            with contextlib.suppress(OSError):
                job.tmp.unlink(missing_ok=True)
            raise
    if remove_spool:
        job.spool.unlink(missing_ok=True)


def _parse(cell: str) -> float | None:
    if cell == "":
        return None
    try:
        return int(cell)
    except ValueError:
        return float(cell)
