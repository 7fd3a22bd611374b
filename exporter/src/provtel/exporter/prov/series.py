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


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # 'nan' and 'inf' are read back by pandas as NaN / inf
    return str(value)


@dataclass(slots=True)
class SeriesStats:
    """Running summary of a series' ``value`` column (NaN counted, not compared)."""

    count: int = 0
    first: float | None = None
    last: float | None = None
    minimum: float | None = None
    maximum: float | None = None

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
        value_at = self.columns.index("value")
        lines = []
        for row in rows:
            self.stats.add(row[value_at])
            lines.append(",".join(map(_cell, row)))
        if not lines:
            return
        path = root / self.relpath
        new = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as out:
            if new:
                out.write(",".join(self.columns) + "\n")
            out.write("\n".join(lines) + "\n")

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
