"""Metric series files beside the PROV document: CSV, float64-lossless, readable by pandas.

A PROV-JSON array is a set, so series never go inside the document; each (metric, context)
is one CSV file referenced from a ``provml:Metric`` entity by ``dcterms:identifier``. Floats are
written with ``repr`` (shortest round-trip form), so ``pandas.read_csv`` gives back the exact
float64 values. The columns keep yProv4ML's ``epoch,value,timestep`` (timestep = Unix ms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provtel.exporter.prov.files import append_lines

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


def _line(row: Sequence[Any]) -> str:
    # Cells are numbers or None; str(float) is its shortest round-trip form ('nan' and 'inf'
    # read back as NaN / inf), and "None" cannot appear otherwise, so it marks empty cells.
    return ",".join(map(str, row)).replace("None", "")


@dataclass(slots=True)
class SeriesStats:
    """Running summary of a series' ``value`` column (NaN counted, not compared)."""

    count: int = 0
    first: float | None = None
    last: float | None = None
    minimum: float | None = None
    maximum: float | None = None

    def add_many(self, values: list[Any]) -> None:
        """Add a batch of values (the hot path: one pass in C where possible)."""
        present = [v for v in values if v is not None]
        if not present:
            return
        self.count += len(present)
        if self.first is None:
            self.first = present[0]
        self.last = present[-1]
        comparable = [v for v in present if v == v]  # NaN is counted, not compared
        if comparable:
            low, high = min(comparable), max(comparable)
            if self.minimum is None or low < self.minimum:
                self.minimum = low
            if self.maximum is None or high > self.maximum:
                self.maximum = high

    def add(self, value: float | None) -> None:
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

    def append(self, root: Path, rows: Iterable[Sequence[Any]]) -> None:
        """Append rows (tuples in ``columns`` order) to the file under ``root``."""
        rows = list(rows)
        if not rows:
            return
        value_at = self.columns.index("value")
        self._write(root, list(map(_line, rows)))  # first: a refused write counts nothing
        self.stats.add_many([row[value_at] for row in rows])

    def _write(self, root: Path, lines: list[str]) -> None:
        # Whole rows or none (a full disk never leaves half a row for the next one to extend).
        append_lines(
            root / self.relpath,
            ("\n".join(lines) + "\n").encode(),
            header=(",".join(self.columns) + "\n").encode(),
        )

    def append_lines(self, root: Path, lines: list[str], values: list[Any]) -> None:
        """Append pre-formatted rows (the step-series fast path) and their values."""
        if not lines:
            return
        self._write(root, lines)
        self.stats.add_many(values)

    def rescan(self, root: Path) -> None:
        """Rebuild the summary from the file (used when recovering a journal)."""
        self.stats = SeriesStats()
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


def _parse(cell: str) -> float | None:
    if cell == "":
        return None
    try:
        return int(cell)
    except ValueError:
        return float(cell)
