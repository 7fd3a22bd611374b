"""A run on disk: its folder, its journal, its metric series, and its finalisation.

The one run store of provtel: the in-process exporter (:mod:`.exporter`), ``provtel serve`` and
``provtel convert`` (:mod:`provtel.exporter.receiver.runs`) all keep their runs here, so folder
naming, series files, finalisation, extra formats and "is this run finished" exist once.

Everything that arrives is appended to ``journal.jsonl`` (:mod:`.journal` owns its format), the
per-step arrays to binary series spools and the metric points to CSV series files
(:mod:`.series`), so memory stays flat however long the run. :meth:`RunStore.finalize` writes
the per-step CSV files from their spools and streams the journal through the mapping into
``prov.json`` (and the extra formats). A process killed before that leaves the journal and series
behind; :func:`recover` turns them into a document later. A run is *finished* when its
``prov.json`` exists (:func:`is_finished`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from provtel.exporter.prov import journal
from provtel.exporter.prov.files import (
    OpenFiles,
    RawFile,
    cut_torn_tail,
    file_mode,
    make_dir,
    make_dirs,
)
from provtel.exporter.prov.formats import write_formats
from provtel.exporter.prov.journal import (
    JOURNAL,
    JournalError,
    JournalWriter,
    encode,
    encode_otlp_spans,
    resource_id,
)
from provtel.exporter.prov.mapping import DocumentBuilder, context_of, prefixes, step_series
from provtel.exporter.prov.series import (
    HISTOGRAM_COLUMNS,
    POINT_COLUMNS,
    STEP_COLUMNS,
    Series,
    StepRows,
    repair_spool,
    write_csvs,
)
from provtel.exporter.prov.values import UniqueNames, local_name
from provtel.exporter.prov.writer import SPOOL_PREFIX, ProvJsonWriter

logger = logging.getLogger(__name__)

__all__ = [
    "DOCUMENT",
    "JOURNAL",
    "METRICS_DIR",
    "JournalError",
    "RunStore",
    "build_document",
    "clean_stale",
    "create_run_dir",
    "is_finished",
    "merge_job",
    "merge_when_complete",
    "recover",
    "unfinished_runs",
]

DOCUMENT = "prov.json"
METRICS_DIR = "metrics"
#: Series files a run keeps open at once (the least recently appended is closed first).
_OPEN_SERIES_FILES = 64


def create_run_dir(root: Path, name: str) -> Path:
    """Create a new, uniquely named run folder under ``root``.

    ``mkdir`` is atomic, so two processes racing for the same name cannot both get it; no
    directory listing is involved.
    """
    make_dirs(root)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{local_name(name, 60)}-{stamp}-{os.getpid()}"
    for n in range(1, 10_000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            make_dir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run folder name under {root} for {base}")


def is_finished(run_dir: Path) -> bool:
    """Whether a run folder holds its document (finalised or recovered)."""
    return (run_dir / DOCUMENT).is_file()


def clean_stale(run_dir: Path) -> None:
    """Remove what a process killed while writing a document left: its spool folders and the
    half-written document. Called by whoever writes the folder's document next (the owner of
    the folder), never while another process may be writing it."""
    with contextlib.suppress(OSError):
        for spool in run_dir.glob(SPOOL_PREFIX + "*"):
            if spool.is_dir() and not spool.is_symlink():
                logger.info("provtel: removing %s, left by a writer that was killed", spool)
                shutil.rmtree(spool, ignore_errors=True)
        (run_dir / (DOCUMENT + ".tmp")).unlink(missing_ok=True)


def unfinished_runs(output_dir: Path) -> list[Path]:
    """The run folders directly under ``output_dir`` (or job folders' rank folders) that hold
    a journal and no document, in name order."""
    found = []
    for journal_path in sorted(output_dir.glob(f"*/{JOURNAL}")) + sorted(
        output_dir.glob(f"*/*/{JOURNAL}")
    ):
        if not is_finished(journal_path.parent):
            found.append(journal_path.parent)
    return found


class RunStore:
    """The on-disk state of one run; not thread-safe (callers serialise).

    ``journal_file`` replaces the journal's file object (tests pass one that fails half-way
    through a write, as a full disk does). ``files`` is a pool of open series files to share
    with other runs of the process (``provtel serve``); by default the run keeps up to 64 open.
    """

    def __init__(
        self,
        run_dir: Path,
        formats: Iterable[str] = ("json",),
        journal_file: RawFile | None = None,
        files: OpenFiles | None = None,
    ) -> None:
        self.dir = run_dir
        self.formats = tuple(formats)
        self._series: dict[str, Series] = {}
        self._paths = UniqueNames(limit=None)  # series file stems, unique in O(1) each
        self._resources: set[str] = set()
        # The records of one request (or one SDK export) share their resource dict: remember
        # the last dict hashed, by identity, during one call (holding it, so the identity
        # cannot be reused; dropped after the call, so a large resource is not kept).
        self._last_resource: tuple[dict[str, Any], str] | None = None
        # Metric series by (name, resource, attributes): no digest per point once known.
        self._metric_keys: dict[tuple[Any, ...], str] = {}
        #: Bytes the series registry holds in memory, about (identities, labels, attributes).
        self.held_bytes = 0
        make_dir(run_dir / METRICS_DIR, exist_ok=True)
        # Series files stay open between appends; the mode is read once.
        self._files = files if files is not None else OpenFiles(_OPEN_SERIES_FILES, file_mode())
        self._journal = JournalWriter(run_dir / JOURNAL, journal_file)

    @property
    def run_id(self) -> str:
        """The run's identifier: its folder name."""
        return self.dir.name

    @property
    def series_count(self) -> int:
        """Series files of the run."""
        return len(self._series)

    # ingest
    def _write(self, lines: list[str]) -> None:
        self._journal.append(lines)

    def _resource(self, attributes: dict[str, Any], lines: list[str]) -> str:
        last = self._last_resource
        if last is not None and last[0] is attributes:
            return last[1]
        rid = resource_id(attributes)
        if rid not in self._resources:
            self._resources.add(rid)
            lines.append(encode(journal.RESOURCE, {"id": rid, "attributes": attributes}))
        self._last_resource = (attributes, rid)
        return rid

    def _get_series(self, key: str, lines: list[str], size: int = 0, **spec: Any) -> Series:
        series = self._series.get(key)
        if series is None:
            self.held_bytes += 400 + len(key) + 2 * len(spec["label"]) + size
            stem = local_name(spec["label"], 80)
            if spec.get("context"):
                stem += "_" + local_name(spec["context"], 40)
            relpath = f"{METRICS_DIR}/{self._paths.take(stem)}.csv"
            series = Series(key=key, relpath=relpath, **spec)
            self._series[key] = series
            lines.append(encode(journal.SERIES, _series_spec(series)))
        return series

    def add_spans(self, records: Iterable[dict[str, Any]]) -> None:
        """Journal span records; their step arrays go to series files."""
        lines: list[str] = []
        rows: list[tuple[Series, StepRows]] = []
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
                rows.append((series, part.rows))
            rec["resource"] = rid
            lines.append(encode(journal.SPAN, rec))
        self._last_resource = None
        # The journal first: when it is refused (a full disk), no row of the request is written
        # either, so the client's retry adds no duplicate rows.
        if lines:
            self._write(lines)
        for series, part_rows in rows:
            series.append_steps(self.dir, part_rows, self._files)

    def add_otlp_spans(self, payload: bytes, resources: Iterable[dict[str, Any]]) -> None:
        """Journal spans as the receiver got them: ``payload`` an encoded OTLP ``TracesData``
        (checked, no per-step arrays or logged values: :func:`otlp.scan_spans`), ``resources``
        the attributes of the resources it holds. They become span records when the journal is
        read (:func:`journal.spans_of`)."""
        lines: list[str] = []
        for attributes in resources:
            self._resource(attributes, lines)
        self._last_resource = None
        lines.append(encode_otlp_spans(payload))
        self._write(lines)

    def add_metric_points(self, points: Iterable[dict[str, Any]]) -> None:
        """Append metric data points to their series files."""
        lines: list[str] = []
        batches: dict[str, tuple[Series, list[tuple[Any, ...]]]] = {}
        for p in points:
            rid = self._resource(p["resource"], lines)
            attrs = p["attributes"]
            try:
                known: tuple[Any, ...] | None = (p["name"], rid, *sorted(attrs.items()))
                key = self._metric_keys.get(known)  # type: ignore[arg-type]
            except TypeError:  # an unhashable attribute value (an array): digest every time
                known, key = None, None
            histogram = p["type"] in ("histogram", "exponentialhistogram")
            if key is None:
                # A digest names the series: its identity in the journal costs the same
                # whatever the size of its attributes.
                identity = journal.dumps([p["name"], rid, sorted(attrs.items())])
                digest = hashlib.sha1(identity.encode("utf-8", "surrogatepass")).hexdigest()
                key = "metric|" + digest
                if known is not None:
                    self._metric_keys[known] = key
                    self.held_bytes += len(identity) + 100
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
                    size=2 * len(identity),
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
        self._last_resource = None
        # The journal first: a series row whose series line was refused would belong to
        # nothing; a series line whose rows were refused is an empty series.
        if lines:
            self._write(lines)
        for series, rows in batches.values():
            series.append(self.dir, rows, self._files)

    # continuing a run in another process (``provtel serve`` after a restart)
    def close(self) -> None:
        """Close the journal *without* finalising: the run stays unfinished on disk and
        :meth:`reopen` continues it. Idempotent."""
        try:
            self._files.close(under=self.dir)
        finally:
            self._journal.close()

    @classmethod
    def reopen(
        cls, run_dir: Path, formats: Iterable[str] = ("json",), files: OpenFiles | None = None
    ) -> RunStore:
        """Continue an unfinished run: ``run_dir`` has a journal and no ``prov.json``.

        The series registry and the known resources are restored from the journal (as
        :func:`build_document` restores series), so new records append to the same series
        files. What a killed writer may have torn is repaired first: a last journal line or CSV
        row without its newline is cut, and a killed finalisation's spool is removed.
        """
        journal_path = run_dir / JOURNAL
        if is_finished(run_dir):
            raise FileExistsError(f"{run_dir} is already finalised ({DOCUMENT} exists)")
        if not journal_path.is_file():
            raise FileNotFoundError(f"no {JOURNAL} in {run_dir}")
        clean_stale(run_dir)
        cut_torn_tail(journal_path)
        series: dict[str, Series] = {}
        resources: set[str] = set()
        for rec in journal.read(journal_path, kinds=(journal.RESOURCE, journal.SERIES)):
            if rec.kind == journal.RESOURCE:
                resources.add(rec.data["id"])
            else:
                s = _series_of(rec.data)
                cut_torn_tail(run_dir / s.relpath)
                if s.spooled:
                    repair_spool(s.spool_path(run_dir))
                    s.adopt_csv(run_dir)  # rows an older provtel wrote to the CSV itself
                s.rescan(run_dir)
                series[s.key] = s
        store = cls(run_dir, formats, files=files)
        store._series = series
        for s in series.values():
            store._paths.reserve(s.relpath[len(METRICS_DIR) + 1 : -len(".csv")])
        store._resources = resources
        return store

    # finalisation
    def finalize(self, keep_journal: bool = False) -> Path:
        """Write ``prov.json`` from the journal, and the extra formats beside it; the journal
        is removed unless it is kept for a later merge (ranks of a job)."""
        self.close()
        path = build_document(self.dir, list(self._series.values()))
        if not keep_journal:
            (self.dir / JOURNAL).unlink(missing_ok=True)
        write_extra_formats(path, self.formats)
        return path


def write_extra_formats(document: Path, formats: Iterable[str]) -> list[Path]:
    """Write the requested formats besides ``json`` next to ``document``, private as the
    document is."""
    written = write_formats(document, tuple(formats))
    for path in written:
        with contextlib.suppress(OSError):
            os.chmod(path, file_mode())
    return written


def recover(run_dir: Path, problems: list[str] | None = None) -> Path:
    """Write the document of a run whose process died (SIGKILL, power cut) from its journal.

    Everything the exporter had journaled is kept (spans end up in the journal within
    ``OTEL_BSP_SCHEDULE_DELAY``, 0.5 s under provtel's distro); the document is marked
    incomplete. The journal stays, so recovery can be repeated. Journal lines that are not
    records are skipped into ``problems``; :class:`JournalError` when none is a record.
    """
    if not (run_dir / JOURNAL).is_file():
        raise FileNotFoundError(f"no {JOURNAL} in {run_dir}: nothing to recover")
    return build_document(run_dir, incomplete=True, problems=problems)


def _series_of(spec: dict[str, Any]) -> Series:
    return Series(**{**spec, "columns": tuple(spec["columns"])})


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
    run_dir: Path,
    series: list[Series] | None = None,
    incomplete: bool = False,
    problems: list[str] | None = None,
) -> Path:
    """Stream ``run_dir``'s journal through the mapping into ``prov.json``.

    With ``series`` None (recovery), the series are read back from the journal and their
    summaries rebuilt from the files. ``incomplete`` marks the document as recovered from a
    run that never finished. Lines that are not records are skipped into ``problems``.
    """
    return _build(run_dir, [(run_dir / JOURNAL, "", series)], incomplete, problems, owner=True)


def _build(
    target: Path,
    sources: list[tuple[Path, str, list[Series] | None]],
    incomplete: bool,
    problems: list[str] | None = None,
    owner: bool = False,
) -> Path:
    """Write ``target/prov.json`` from journals; ``prefix`` places each journal's series
    files relative to ``target`` (``rank0/`` when merging a job).

    Per-step series' CSV files are written from their spools first (the document names them);
    the ``owner`` of the run (finalisation, recovery) removes the spools, a merge keeps them
    (a rank that has not finished may still be writing)."""
    clean_stale(target)
    skipped: list[str] = []
    records = 0
    writer = ProvJsonWriter(target / DOCUMENT, prefixes(target.name))
    try:
        builder = DocumentBuilder(writer)
        all_series: list[Series] = []
        for path, prefix, known in sources:
            recovered: list[Series] = []
            found: list[str] = []
            for rec in journal.read(path, found):
                records += 1
                data = rec.data
                if rec.kind == journal.SPAN:
                    builder.add_span(data, data.get("resource"))
                elif rec.kind == journal.RESOURCE:
                    builder.add_resource(data["id"], data["attributes"])
                elif rec.kind == journal.SERIES and known is None:
                    data["relpath"] = prefix + data["relpath"]
                    s = _series_of(data)
                    s.rescan(target)
                    recovered.append(s)
            skipped += [f"{path}: {p}" for p in found]
            all_series.extend(known if known is not None else recovered)
        if skipped and not records:
            first = skipped[0]
            more = f" and {len(skipped) - 1} more unreadable line(s)" if len(skipped) > 1 else ""
            raise JournalError(f"not a provtel journal: {first}{more}")
        write_csvs(all_series, target, remove_spool=owner)
        builder.finish(all_series, incomplete=incomplete)
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    if problems is not None:
        problems.extend(skipped)
    else:
        for problem in skipped:
            logger.warning("provtel: skipped %s", problem)
    return path


def rank_dirs(job_dir: Path) -> list[Path]:
    """The rank folders of a job folder (those holding a journal), in rank order."""

    def order(path: Path) -> tuple[int, str]:
        digits = path.name.removeprefix("rank").split("-", 1)[0]
        return (int(digits) if digits.isdigit() else 1 << 30, path.name)

    return sorted((p for p in job_dir.iterdir() if (p / JOURNAL).is_file()), key=order)


def merge_job(job_dir: Path, problems: list[str] | None = None) -> Path:
    """Write one job-level ``prov.json`` from the journals of all its rank folders.

    Every rank's activities are kept, labelled ``provtel:rank``; series files stay in the rank
    folders and are referenced as ``rank<R>-.../metrics/...``. A rank that did not finish is
    included as far as its journal goes, and the document is then marked incomplete.
    """
    ranks = rank_dirs(job_dir)
    if not ranks:
        raise FileNotFoundError(f"no rank folders with a {JOURNAL} under {job_dir}")
    incomplete = any(not is_finished(r) for r in ranks)
    sources: list[tuple[Path, str, list[Series] | None]] = [
        (r / JOURNAL, r.name + "/", None) for r in ranks
    ]
    return _build(job_dir, sources, incomplete, problems)


def merge_when_complete(
    job_dir: Path, world_size: int, formats: Iterable[str] = ("json",)
) -> Path | None:
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
    merged = merge_job(job_dir)
    write_extra_formats(merged, formats)
    return merged
