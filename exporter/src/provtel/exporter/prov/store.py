"""A run on disk: its folder, its journal, its metric series, and its finalisation.

Everything that arrives is appended to ``journal.jsonl`` (one JSON object per line) and the
per-step arrays and metric points go straight to series files, so memory stays flat however long
the run. :meth:`RunStore.finalize` streams the journal through the mapping into ``prov.json``. A
process killed before that leaves the journal and series behind; :func:`recover` turns them into
a document later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from provtel.exporter.prov.mapping import DocumentBuilder, context_of, prefixes, step_series
from provtel.exporter.prov.series import HISTOGRAM_COLUMNS, POINT_COLUMNS, STEP_COLUMNS, Series
from provtel.exporter.prov.values import local_name
from provtel.exporter.prov.writer import ProvJsonWriter

logger = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
DOCUMENT = "prov.json"
METRICS_DIR = "metrics"
_FSYNC_INTERVAL_S = 1.0


def create_run_dir(root: Path, name: str) -> Path:
    """Create a new, uniquely named run folder under ``root``.

    ``mkdir`` is atomic, so two processes racing for the same name cannot both get it; no
    directory listing is involved.
    """
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{local_name(name, 60)}-{stamp}-{os.getpid()}"
    for n in range(1, 10_000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run folder name under {root} for {base}")


def _dumps(obj: Any) -> str:
    # stdlib json keeps NaN/Infinity (orjson would write null), and journals are small.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


class RunStore:
    """The on-disk state of one run; not thread-safe (callers serialise)."""

    def __init__(self, run_dir: Path, formats: Iterable[str] = ("json",)) -> None:
        self.dir = run_dir
        self.formats = tuple(formats)
        self._series: dict[str, Series] = {}
        self._resources: set[str] = set()
        (run_dir / METRICS_DIR).mkdir(exist_ok=True)
        self._journal: IO[str] | None = open(  # noqa: SIM115 closed in finalize()
            run_dir / JOURNAL, "a", encoding="utf-8"
        )
        self._last_sync = time.monotonic()

    @property
    def run_id(self) -> str:
        """The run's identifier: its folder name."""
        return self.dir.name

    # ingest
    def _write(self, lines: list[str]) -> None:
        assert self._journal is not None, "run already finalised"
        self._journal.write("\n".join(lines) + "\n")
        self._journal.flush()  # a killed process keeps what the OS has
        now = time.monotonic()
        if now - self._last_sync >= _FSYNC_INTERVAL_S:  # a power cut keeps what was synced
            os.fsync(self._journal.fileno())
            self._last_sync = now

    def _resource(self, attributes: dict[str, Any], lines: list[str]) -> str:
        rid = hashlib.sha1(_dumps(sorted(attributes.items())).encode()).hexdigest()[:12]
        if rid not in self._resources:
            self._resources.add(rid)
            lines.append(_dumps({"t": "resource", "id": rid, "attributes": attributes}))
        return rid

    def _get_series(self, key: str, lines: list[str], **spec: Any) -> Series:
        series = self._series.get(key)
        if series is None:
            stem = local_name(spec["label"], 80)
            if spec.get("context"):
                stem += "_" + local_name(spec["context"], 40)
            relpath, n = f"{METRICS_DIR}/{stem}.csv", 1
            taken = {s.relpath for s in self._series.values()}
            while relpath in taken:
                n += 1
                relpath = f"{METRICS_DIR}/{stem}_{n}.csv"
            series = Series(key=key, relpath=relpath, **spec)
            self._series[key] = series
            lines.append(_dumps({"t": "series", **_series_spec(series)}))
        return series

    def add_spans(self, records: Iterable[dict[str, Any]]) -> None:
        """Journal span records; their step arrays go to series files."""
        lines: list[str] = []
        for rec in records:
            rid = self._resource(rec.pop("resource", None) or {}, lines)
            for part in step_series(rec):
                key = f"step|{part.label}|{part.context}|{rec['trace_id']}|{rid}"
                series = self._get_series(
                    key,
                    lines,
                    label=part.label,
                    context=part.context,
                    unit=part.unit,
                    source=(rec.get("scope") or {}).get("name") or "provtel",
                    columns=STEP_COLUMNS,
                    trace_id=rec["trace_id"],
                    resource=rid,
                )
                series.append_lines(self.dir, part.lines, part.values)
            rec["resource"] = rid
            lines.append(_dumps({"t": "span", **rec}))
        if lines:
            self._write(lines)

    def add_metric_points(self, points: Iterable[dict[str, Any]]) -> None:
        """Append metric data points to their series files."""
        lines: list[str] = []
        batches: dict[str, tuple[Series, list[tuple[Any, ...]]]] = {}
        for p in points:
            rid = self._resource(p["resource"], lines)
            attrs = p["attributes"]
            key = "metric|" + _dumps([p["name"], rid, sorted(attrs.items())])
            histogram = p["type"] in ("histogram", "exponentialhistogram")
            if key not in self._series:
                label = p["name"]
                extra = [str(v) for k, v in sorted(attrs.items()) if k != "ml.context"]
                if extra:
                    label += "_" + "_".join(extra)
                self._get_series(
                    key,
                    lines,
                    label=label,
                    context=context_of(attrs, "") or None,
                    source=(p.get("scope") or {}).get("name") or "otel",
                    unit=p["unit"],
                    description=p["description"],
                    attributes=attrs,
                    resource=rid,
                    columns=HISTOGRAM_COLUMNS if histogram else POINT_COLUMNS,
                )
            series = self._series[key]
            start, t = p.get("start"), p["time"]
            ms = t // 1_000_000 if t is not None else None
            if histogram:
                count, total = p["count"], p["sum"]
                mean = total / count if count else None
                row: tuple[Any, ...] = (t, start, count, total, p["min"], p["max"], mean, ms)
            else:
                row = (t, start, p["value"], ms)
            batches.setdefault(key, (series, []))[1].append(row)
        for series, rows in batches.values():
            series.append(self.dir, rows)
        if lines:
            self._write(lines)

    # continuing a run in another process (``provtel serve`` after a restart)
    def close(self) -> None:
        """Close the journal *without* finalising: the run stays unfinished on disk and
        :meth:`reopen` continues it. Idempotent."""
        if self._journal is not None:
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self._journal.close()
            self._journal = None

    @classmethod
    def reopen(cls, run_dir: Path, formats: Iterable[str] = ("json",)) -> RunStore:
        """Continue an unfinished run: ``run_dir`` has a journal and no ``prov.json``.

        The series registry and the known resources are restored from the journal (as
        :func:`build_document` restores series), so new records append to the same series
        files. What a killed writer may have torn is repaired first: a last journal line without
        its newline is terminated (:func:`build_document` skips it), and a last CSV row without
        its newline is cut.
        """
        journal = run_dir / JOURNAL
        if (run_dir / DOCUMENT).exists():
            raise FileExistsError(f"{run_dir} is already finalised ({DOCUMENT} exists)")
        if not journal.is_file():
            raise FileNotFoundError(f"no {JOURNAL} in {run_dir}")
        series: dict[str, Series] = {}
        resources: set[str] = set()
        with open(journal, "rb+") as raw:
            size = raw.seek(0, os.SEEK_END)
            if size:
                raw.seek(size - 1)
                if raw.read(1) != b"\n":
                    raw.write(b"\n")
        with open(journal, encoding="utf-8") as lines:
            for line in lines:
                if line.startswith('{"t":"span"'):
                    continue  # spans are only read at finalisation
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("t") == "resource":
                    resources.add(rec["id"])
                elif rec.get("t") == "series":
                    spec = {k: v for k, v in rec.items() if k != "t"}
                    s = Series(**{**spec, "columns": tuple(spec["columns"])})
                    _cut_torn_row(run_dir / s.relpath)
                    s.rescan(run_dir)
                    series[s.key] = s
        store = cls(run_dir, formats)
        store._series = series
        store._resources = resources
        return store

    # finalisation
    def finalize(self, keep_journal: bool = False) -> Path:
        """Write ``prov.json`` from the journal; the journal is removed unless it is kept for
        a later merge (ranks of a job)."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        path = build_document(self.dir, list(self._series.values()))
        if not keep_journal:
            (self.dir / JOURNAL).unlink(missing_ok=True)
        return path


def recover(run_dir: Path) -> Path:
    """Write the document of a run whose process died (SIGKILL, power cut) from its journal.

    Everything the exporter had journaled is kept (spans end up in the journal within
    ``OTEL_BSP_SCHEDULE_DELAY``, 0.5 s under provtel's distro); the document is marked
    incomplete. The journal stays, so recovery can be repeated.
    """
    if not (run_dir / JOURNAL).is_file():
        raise FileNotFoundError(f"no {JOURNAL} in {run_dir}: nothing to recover")
    return build_document(run_dir, incomplete=True)


def _cut_torn_row(path: Path) -> None:
    """Cut a last row without its newline (a writer killed mid-row); drop a header-less file."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        end = data.rfind(b"\n") + 1
        f.truncate(end)
    if end == 0:
        path.unlink()


def _series_spec(series: Series) -> dict[str, Any]:
    return {
        "key": series.key,
        "label": series.label,
        "context": series.context,
        "source": series.source,
        "unit": series.unit,
        "relpath": series.relpath,
        "columns": list(series.columns),
        "description": series.description,
        "attributes": series.attributes,
        "trace_id": series.trace_id,
        "resource": series.resource,
    }


def build_document(
    run_dir: Path, series: list[Series] | None = None, incomplete: bool = False
) -> Path:
    """Stream ``run_dir``'s journal through the mapping into ``prov.json``.

    With ``series`` None (recovery), the series are read back from the journal and their
    summaries rebuilt from the files. ``incomplete`` marks the document as recovered from a
    run that never finished.
    """
    return _build(run_dir, [(run_dir / JOURNAL, "", series)], incomplete)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines journal; a line torn by a crash is skipped with a warning."""
    with open(path, encoding="utf-8") as journal:
        for line in journal:
            try:
                yield json.loads(line)
            except ValueError:
                logger.warning("provtel: skipping a torn journal line in %s", path)


def _build(
    target: Path, sources: list[tuple[Path, str, list[Series] | None]], incomplete: bool
) -> Path:
    """Write ``target/prov.json`` from journals; ``prefix`` places each journal's series
    files relative to ``target`` (``rank0/`` when merging a job)."""
    writer = ProvJsonWriter(target / DOCUMENT, prefixes(target.name))
    try:
        builder = DocumentBuilder(writer)
        all_series: list[Series] = []
        for path, prefix, known in sources:
            recovered: list[Series] = []
            for rec in read_jsonl(path):
                kind = rec.pop("t", None)
                if kind == "span":
                    builder.add_span(rec, rec.get("resource"))
                elif kind == "resource":
                    builder.add_resource(rec["id"], rec["attributes"])
                elif kind == "series" and known is None:
                    rec["relpath"] = prefix + rec["relpath"]
                    s = Series(**{**rec, "columns": tuple(rec["columns"])})
                    s.rescan(target)
                    recovered.append(s)
            all_series.extend(known if known is not None else recovered)
        builder.finish(all_series, incomplete=incomplete)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def rank_dirs(job_dir: Path) -> list[Path]:
    """The rank folders of a job folder (those holding a journal), in rank order."""

    def order(path: Path) -> tuple[int, str]:
        digits = path.name.removeprefix("rank").split("-", 1)[0]
        return (int(digits) if digits.isdigit() else 1 << 30, path.name)

    return sorted((p for p in job_dir.iterdir() if (p / JOURNAL).is_file()), key=order)


def merge_job(job_dir: Path) -> Path:
    """Write one job-level ``prov.json`` from the journals of all its rank folders.

    Every rank's activities are kept, labelled ``provtel:rank``; series files stay in the rank
    folders and are referenced as ``rank<R>-.../metrics/...``. A rank that did not finish is
    included as far as its journal goes, and the document is then marked incomplete.
    """
    ranks = rank_dirs(job_dir)
    if not ranks:
        raise FileNotFoundError(f"no rank folders with a {JOURNAL} under {job_dir}")
    incomplete = any(not (r / DOCUMENT).is_file() for r in ranks)
    return _build(job_dir, [(r / JOURNAL, r.name + "/", None) for r in ranks], incomplete)


def merge_when_complete(job_dir: Path, world_size: int) -> Path | None:
    """Merge the job if all ``world_size`` ranks have written their documents.

    Each rank calls this after writing its own document, so the last one to finish always
    sees every document; an exclusive lock file makes exactly one rank do the merge.
    """
    ranks = rank_dirs(job_dir)
    if len(ranks) < world_size or not all((r / DOCUMENT).is_file() for r in ranks):
        return None
    try:
        fd = os.open(job_dir / "merge.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return None
    os.close(fd)
    return merge_job(job_dir)
