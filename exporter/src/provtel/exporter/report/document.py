"""Reading a run's PROV document and its series files, as the report needs them.

Works for the three folders provtel writes: a run folder (``prov/<run>/prov.json``), a merged
job folder (``prov/<run>-<job>/prov.json`` with ``rank<R>-…/`` folders beside it, every record
labelled ``provtel:rank``) and the run folders of ``provtel serve``. Only the document and the
CSV files it points at are read; nothing here imports torch or the SDK.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from provtel.semconv import attributes as sc

DOCUMENT = "prov.json"

RUN = "provtel:Run"
EPOCH = "provtel:Epoch"
EVALUATION = "provtel:Evaluation"
STEP_BLOCK = "provtel:StepBlock"
CHECKPOINT = "provtel:Checkpoint"
METRIC = "provml:Metric"
DATASET = "provml:Dataset"
MODEL = "provml:Model"
HYPERPARAMETER = "provml:HyperParameter"

_STEP_PREFIX = "ml.step."
#: Labels of the per-step series (``ml.step.<label>`` arrays of step-block spans).
STEP_LABELS = frozenset(
    name.removeprefix(_STEP_PREFIX)
    for name in (
        sc.ML_STEP_DURATION,
        sc.ML_STEP_DATA_WAIT,
        sc.ML_STEP_FORWARD,
        sc.ML_STEP_BACKWARD,
        sc.ML_STEP_OPTIMIZER,
        sc.ML_STEP_LOSS,
        sc.ML_STEP_LEARNING_RATE,
        sc.ML_STEP_BATCH_SIZE,
        sc.ML_STEP_SKIPPED,
    )
)


def value(v: Any) -> Any:
    """A PROV-JSON literal as a Python value (typed literals ``{"$": …, "type": …}`` unwrapped)."""
    if isinstance(v, dict) and "$" in v:
        text, kind = str(v["$"]), str(v.get("type", ""))
        if kind == "xsd:double":
            return float({"NaN": "nan", "INF": "inf", "-INF": "-inf"}.get(text, text))
        if kind in ("xsd:integer", "xsd:int", "xsd:long"):
            return int(text)
        return text
    return v


def otel(record: dict[str, Any], key: str, default: Any = None) -> Any:
    """The ``otel:<key>`` attribute of a record (an OpenTelemetry attribute carried over)."""
    return value(record.get("otel:" + key, default))


def nano(record: dict[str, Any], which: str) -> int | None:
    """Exact start or end (``which``) of an activity in Unix nanoseconds."""
    v = otel(record, f"{which}_time_unix_nano")
    return int(v) if isinstance(v, (int, float)) else None


@dataclass(slots=True)
class Columns:
    """Some columns of a series file, as parallel lists."""

    names: tuple[str, ...]
    data: dict[str, list[float]]

    def __len__(self) -> int:
        return len(next(iter(self.data.values()), []))

    def get(self, name: str) -> list[float]:
        """One column (empty when the file has no such column)."""
        return self.data.get(name, [])


def _number(text: str) -> float:
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def _floats(cells: list[str]) -> list[float]:
    try:
        return list(map(float, cells))
    except ValueError:  # an empty cell (no start time) or a stray value
        return [_number(c) for c in cells]


def read_columns(path: Path, wanted: Iterable[str]) -> Columns:
    """Read the ``wanted`` columns of a CSV series file (numbers; a missing cell is NaN).

    Series files are written by provtel: numbers only, no quoting, the same number of cells in
    every row. So the whole file is split into cells at once and each column is a slice, an
    order of magnitude faster than the csv module on long runs. A last row torn by a crash (no
    newline) is left out; a file whose rows are ragged is read line by line.
    """
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        body = f.read()
    if not first:
        return Columns((), {})
    header = tuple(first.rstrip("\r\n").split(","))
    index = {n: i for i, n in enumerate(header)}
    picked = [(n, index[n]) for n in wanted if n in index]
    data: dict[str, list[float]] = {}
    if not picked:
        return Columns(header, data)
    body = body[: body.rfind("\n") + 1]  # a torn last row has no newline
    rows = body.count("\n")
    width = len(header)
    cells = body.replace("\r", "").replace("\n", ",").split(",")[:-1] if rows else []
    if len(cells) == rows * width:
        for name, i in picked:
            data[name] = _floats(cells[i::width])
        return Columns(header, data)
    lines = [line.split(",") for line in body.splitlines()]
    lines = [r for r in lines if len(r) == width]
    for name, i in picked:
        data[name] = _floats([r[i] for r in lines])
    return Columns(header, data)


@dataclass(slots=True)
class RunDocument:
    """One PROV document of provtel with indexes by type, and where its series files are."""

    path: Path
    doc: dict[str, Any]
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_type: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    generated_by: dict[str, str] = field(default_factory=dict)  # entity -> activity
    used: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # act -> ents
    derived_from: dict[str, str] = field(default_factory=dict)  # entity -> entity
    associations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        """The folder holding the document (series paths are relative to it)."""
        return self.path.parent

    @property
    def name(self) -> str:
        """The run's (or job's) folder name."""
        return self.folder.name

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Records (activities or entities) whose ``prov:type`` is ``kind``, in document order."""
        out = []
        for ident in self.by_type.get(kind, []):
            rec = self.activities.get(ident) or self.entities.get(ident)
            if rec is not None:
                out.append(rec)
        return out

    def ranks(self) -> list[int | None]:
        """Ranks of a job document in order; ``[None]`` for a single-process run."""
        ranks = {value(a.get("provtel:rank")) for a in self.of_type(RUN)}
        numbered = sorted(r for r in ranks if isinstance(r, int))
        return list(numbered) if numbered else [None]

    def series_path(self, entity: dict[str, Any]) -> Path | None:
        """The series file a ``provml:Metric`` entity points at, if it exists."""
        rel = value(entity.get("dcterms:identifier"))
        if not isinstance(rel, str):
            return None
        path = (self.folder / rel).resolve()
        return path if path.is_file() else None

    @property
    def incomplete(self) -> bool:
        """True for a document recovered from a run that never finished."""
        return any(
            value(e.get("provtel:complete")) is False
            for e in self.of_type("provtel:RecoveredRecord")
        )


def _index(records: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ident, rec in (records or {}).items():
        # PROV-JSON allows a list of records under one identifier; provtel writes one.
        out[ident] = rec[0] if isinstance(rec, list) and rec else rec
    return out


def find_document(target: Path) -> Path:
    """The ``prov.json`` of a run folder, a job folder or the file itself."""
    if target.is_dir():
        doc = target / DOCUMENT
        if doc.is_file():
            return doc
        raise FileNotFoundError(f"no {DOCUMENT} in {target} (is it a run folder?)")
    if target.is_file():
        return target
    raise FileNotFoundError(f"{target}: no such run folder or document")


def latest_document(directory: Path) -> Path:
    """The newest ``DIR/*/prov.json``."""
    docs = sorted(directory.glob(f"*/{DOCUMENT}"), key=lambda p: p.stat().st_mtime)
    if not docs:
        raise FileNotFoundError(f"no */{DOCUMENT} under {directory}")
    return docs[-1]


def load(target: Path | str, progress: Callable[[int], None] | None = None) -> RunDocument:
    """Read a run's document (``target``: run or job folder, or the ``prov.json``)."""
    path = find_document(Path(target))
    raw = path.read_bytes()
    if progress is not None:
        progress(len(raw))
    doc = orjson.loads(raw)
    run = RunDocument(path=path, doc=doc)
    run.activities = _index(doc.get("activity"))
    run.entities = _index(doc.get("entity"))
    run.agents = _index(doc.get("agent"))
    for table in (run.activities, run.entities):
        for ident, rec in table.items():
            kind = value(rec.get("prov:type"))
            if isinstance(kind, str):
                run.by_type[kind].append(ident)
    for rel in _index(doc.get("wasGeneratedBy")).values():
        if "prov:entity" in rel and "prov:activity" in rel:
            run.generated_by[rel["prov:entity"]] = rel["prov:activity"]
    for rel in _index(doc.get("used")).values():
        if "prov:entity" in rel and "prov:activity" in rel:
            run.used[rel["prov:activity"]].append(rel["prov:entity"])
    for rel in _index(doc.get("wasDerivedFrom")).values():
        if "prov:generatedEntity" in rel and "prov:usedEntity" in rel:
            run.derived_from[rel["prov:generatedEntity"]] = rel["prov:usedEntity"]
    run.associations = list(_index(doc.get("wasAssociatedWith")).values())
    return run
