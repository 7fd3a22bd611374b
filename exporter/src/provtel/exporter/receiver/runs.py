"""Which run a span or metric point belongs to, and when a run is finished.

One :class:`Router` serves ``provtel serve`` (records arrive over the network, runs are
finalised by the clock) and ``provtel convert`` (records come from files, every run is finalised
at the end), so both write the same documents from the same telemetry.

**A run is a trace.** All ranks of a job share one trace id, so every span with that trace id
goes to one :class:`~provtel.exporter.prov.store.RunStore` under ``<output>/<name>-<trace
prefix>-<UTC time>-<pid>/``, created with :func:`~provtel.exporter.prov.store.create_run_dir`
(atomic ``mkdir``: no collisions; the name is made safe with ``local_name``: no path traversal).
``<name>`` is ``ml.run.name`` (span or resource attribute) or ``service.name`` of the first span
that arrives for the trace. A small ``receiver.json`` in the folder records the trace id while
the run is open.

**Metric points carry no trace id.** A point belongs to the open run that has seen a span from
the same resource: the same ``service.instance.id``, or the same resource attribute set (the
SDK gives its tracer and meter providers one resource). The latest run to see a resource wins.
Points from a resource no run has seen yet are *pending*: appended to
``<output>/.pending/<hash>.jsonl`` before they are acknowledged, and moved into the run when its
first span from that resource arrives. Pending points whose resource sends nothing for the idle
timeout become a run of their own (``<service.name>-metrics-…``: agents and metric entities, no
activities), so nothing acknowledged is dropped.

**A run is finalised** (``prov.json`` written, journal removed) when its root spans have
arrived and no span came for ``grace_s``; or when nothing at all came for ``idle_s``. A root span
has no parent, or a remote one. In a job whose resources say ``ml.world_size`` (provtel's job
detection), the roots of all ``ml.rank`` 0..N-1 must have arrived, so a rank that finishes early
does not close the run; otherwise one root is enough. Metric points keep a run from going idle
but do not delay the grace period (a notebook kernel keeps exporting metrics after its run
ended). A span for a trace whose run was already finalised starts a new run (logged).

**One writer per output folder.** A router holds an exclusive ``flock`` on
``<output>/.provtel.lock`` from its creation to :meth:`Router.close`, so a second ``provtel serve``
(or ``provtel convert``) on the same ``--output`` fails at start with :class:`OutputInUse` instead
of both accepting and losing data. The kernel drops the lock when the process dies; a clean
stop also removes the file.

**Memory is bounded in bytes.** A pending resource costs a fixed few hundred bytes in memory
(its keys and file; its attributes and points stay on disk), the pending files together at most
``max_pending_bytes``; the series the open runs hold (identity, label, attributes) at most
``max_series_bytes``; beyond either, requests are refused with :class:`Overloaded` (retry).

**Spans are journaled as OTLP.** :meth:`Router.add_otlp_spans` takes a request's spans checked
but not converted (:func:`~provtel.exporter.prov.otlp.scan_spans`: per trace, the resources,
which of them sent a root span, the first span for the folder name) and journals their protobuf
(``otlp_spans`` lines); they become records when the journal is read. :meth:`Router.add_spans`
takes records (``provtel convert``, and requests whose spans write series rows on arrival).

**Restarts.** Everything is journaled before :meth:`Router.add_spans` / :meth:`add_otlp_spans`
/ :meth:`add_metrics` return, and the receiver acknowledges only after they return.
:meth:`Router.recover` reopens every folder with a ``receiver.json``, a journal and no
``prov.json`` (:meth:`RunStore.reopen`), and re-indexes the pending files, so a restarted
receiver continues where the last one stopped.

Thread safety: one lock serialises routing and journaling (the work is Python, so the GIL
serialises it anyway); building a document runs outside it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import resource as rlimit
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provtel.exporter.prov import journal
from provtel.exporter.prov.files import (
    OpenFiles,
    append_lines,
    make_dir,
    make_dirs,
    open_private,
    write_private,
)
from provtel.exporter.prov.otlp import ResourcePoints, TraceSpans
from provtel.exporter.prov.store import (
    JOURNAL,
    RunStore,
    clean_stale,
    create_run_dir,
    is_finished,
)
from provtel.exporter.prov.values import local_name
from provtel.semconv import attributes as sc

logger = logging.getLogger(__name__)

#: Marks a run folder as one of the receiver's open runs; holds its trace id.
MARKER = "receiver.json"
#: Folder (under the output directory) of metric points waiting for their run.
PENDING_DIR = ".pending"
#: The lock file of an output folder (one router at a time).
LOCK_FILE = ".provtel.lock"


class OutputInUse(OSError):
    """Another router (``provtel serve`` or ``provtel convert``) holds the output folder."""


class Overloaded(Exception):
    """The request cannot be taken now; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def resource_keys(attributes: dict[str, Any]) -> tuple[str, ...]:
    """The keys a resource is matched by: its whole attribute set, and its
    ``service.instance.id`` when it has one."""
    text = journal.dumps(sorted(attributes.items()))
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
    sid = attributes.get("service.instance.id")
    return (f"res:{digest}", f"sid:{sid}") if sid else (f"res:{digest}",)


def _is_root(record: dict[str, Any]) -> bool:
    return not record.get("parent_span_id") or bool(record.get("parent_is_remote"))


def _process(resource: dict[str, Any]) -> str:
    """Which process of a job a resource is: its rank, else its whole identity."""
    rank = resource.get(sc.ML_RANK)
    if isinstance(rank, int) and not isinstance(rank, bool):
        return f"rank:{rank}"
    return resource_keys(resource)[0]


def _world_size(resource: dict[str, Any]) -> int | None:
    size = resource.get(sc.ML_WORLD_SIZE)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def run_name(record: dict[str, Any]) -> str:
    """The name part of a run folder, from the first span of a trace."""
    resource = record.get("resource") or {}
    if not isinstance(resource, dict):
        resource = {}
    name = (
        (record.get("attributes") or {}).get(sc.ML_RUN_NAME)
        or resource.get(sc.ML_RUN_NAME)
        or resource.get("service.name")
        or "run"
    )
    return local_name(str(name), 40)


@dataclass(eq=False)
class Run:
    """An open run: one trace, its store and its clocks."""

    trace_id: str
    store: RunStore
    last_span: float
    last_data: float
    #: Processes (``rank:<R>`` or a resource key) whose root span arrived.
    roots: set[str] = field(default_factory=set)
    #: ``ml.world_size`` of the job, when its resources say.
    world_size: int | None = None
    keys: set[str] = field(default_factory=set)
    spans: int = 0
    points: int = 0

    @property
    def dir(self) -> Path:
        """The run folder."""
        return self.store.dir

    @property
    def roots_complete(self) -> bool:
        """Whether every root span the run expects has arrived."""
        if self.world_size is None:
            return bool(self.roots)
        ranks = {r for r in self.roots if r.startswith("rank:")}
        return len(ranks) >= self.world_size

    def saw(self, resource: dict[str, Any], root: bool) -> None:
        """Note a span's resource (job size) and whether the span is a root."""
        size = _world_size(resource)
        if size is not None:
            self.world_size = max(size, self.world_size or 0)
        if root:
            self.roots.add(_process(resource))


@dataclass(eq=False, slots=True)
class _Pending:
    # Deliberately small: the resource's attributes and points stay in the file.
    path: Path
    keys: tuple[str, ...]
    last: float
    points: int = 0
    size: int = 0


class PendingMetrics:
    """Metric points of resources no run has claimed yet, kept on disk (one file a resource),
    bounded in resources and in bytes on disk."""

    def __init__(self, directory: Path, max_resources: int, max_bytes: int = 1 << 30) -> None:
        self.dir = directory
        self.max_resources = max_resources
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[str, _Pending] = {}  # "res:" key -> entry
        self._by_key: dict[str, set[str]] = {}  # any key -> "res:" keys
        self._expired = 0
        self._points = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def points(self) -> int:
        """Points waiting, over all resources."""
        return self._points

    def _index(self, entry: _Pending) -> None:
        self.bytes += entry.size
        self._points += entry.points
        self._entries[entry.keys[0]] = entry
        for key in entry.keys:
            self._by_key.setdefault(key, set()).add(entry.keys[0])

    def _remove(self, entry: _Pending) -> None:
        self.bytes -= entry.size
        self._points -= entry.points
        del self._entries[entry.keys[0]]
        for key in entry.keys:
            owners = self._by_key.get(key)
            if owners is not None:
                owners.discard(entry.keys[0])
                if not owners:
                    del self._by_key[key]

    def room_for(self, keys: Iterable[tuple[str, ...]], nbytes: int = 0) -> bool:
        """Whether the resources with these keys, and ``nbytes`` more on disk, can be held."""
        new = {k[0] for k in keys if k[0] not in self._entries}
        if len(self._entries) + len(new) > self.max_resources:
            return False
        return self.bytes + nbytes <= self.max_bytes

    @staticmethod
    def encode(group: ResourcePoints) -> bytes:
        """The pending-file line of one resource's points."""
        points = [{k: v for k, v in p.items() if k != "resource"} for p in group.points]
        line = journal.encode(journal.POINTS, {"resource": group.resource, "points": points})
        return (line + "\n").encode("utf-8", "surrogatepass")

    def add(
        self, keys: tuple[str, ...], group: ResourcePoints, now: float, line: bytes | None = None
    ) -> None:
        """Append one resource's points to its pending file (``line``: :meth:`encode`'s)."""
        entry = self._entries.get(keys[0])
        if entry is None:
            make_dirs(self.dir.parent)
            make_dir(self.dir, exist_ok=True)
            name = keys[0].split(":", 1)[1] + ".jsonl"  # a hex digest: a safe file name
            entry = _Pending(self.dir / name, keys, now)
            self._index(entry)
        data = line if line is not None else self.encode(group)
        append_lines(entry.path, data)
        entry.last = now
        entry.points += len(group.points)
        entry.size += len(data)
        self._points += len(group.points)
        self.bytes += len(data)

    def claim(self, key: str) -> list[list[dict[str, Any]]]:
        """Take the points of every resource matching ``key``, oldest first."""
        batches: list[list[dict[str, Any]]] = []
        for res_key in sorted(self._by_key.get(key, ())):
            entry = self._entries[res_key]
            batches.extend(_read_pending(entry.path))
            entry.path.unlink(missing_ok=True)
            self._remove(entry)
        if batches and not self._entries:
            with contextlib.suppress(OSError):  # leave no empty folder behind
                self.dir.rmdir()
        return batches

    def take_expired(self, now: float, idle_s: float) -> list[Path]:
        """Detach resources silent for ``idle_s``; return their files, renamed so that new
        points of the same resource start a new file."""
        out = []
        for entry in [e for e in self._entries.values() if now - e.last >= idle_s]:
            self._remove(entry)
            self._expired += 1
            target = entry.path.with_name(f"{entry.path.stem}.{os.getpid()}-{self._expired}.done")
            os.replace(entry.path, target)
            out.append(target)
        return out

    def recover(self, now: float) -> None:
        """Index the pending files a previous receiver left."""
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.jsonl")):
            batches = _read_pending(path)
            if not batches or not batches[0]:
                path.unlink(missing_ok=True)
                continue
            resource = batches[0][0]["resource"]
            entry = _Pending(path, resource_keys(resource), now)
            entry.points = sum(len(b) for b in batches)
            entry.size = path.stat().st_size
            self._index(entry)

    def leftovers(self) -> list[Path]:
        """Files detached by :meth:`take_expired` whose run was never written (a crash)."""
        return sorted(self.dir.glob("*.done")) if self.dir.is_dir() else []


def _read_pending(path: Path) -> list[list[dict[str, Any]]]:
    batches = []
    try:
        for rec in journal.read(path, kinds=(journal.POINTS,)):
            resource = rec.data["resource"]
            batches.append([{"resource": resource, **p} for p in rec.data["points"]])
    except FileNotFoundError:
        pass
    return batches


class Router:
    """Sends span and metric records to their runs; finalises runs.

    ``clock`` is injectable (``time.monotonic`` by default) so that tests can move time.
    """

    def __init__(
        self,
        output_dir: Path,
        *,
        formats: Sequence[str] = ("json",),
        grace_s: float = 30.0,
        idle_s: float = 1800.0,
        max_runs: int = 256,
        max_pending_resources: int = 10_000,
        max_pending_bytes: int = 1 << 30,
        max_series_bytes: int = 256 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.formats = tuple(formats)
        self.grace_s = grace_s
        self.idle_s = idle_s
        self.max_runs = max_runs
        self.max_series_bytes = max_series_bytes
        self.clock = clock
        self._lock_fd: int | None = _lock_output(self.output_dir)
        #: The series files of all open runs, kept open in one pool bounded by the process's
        #: descriptor limit (a run of many series would otherwise open a file per point).
        self.files = OpenFiles(limit=_series_file_limit())
        self.pending = PendingMetrics(
            self.output_dir / PENDING_DIR, max_pending_resources, max_pending_bytes
        )
        self._runs: dict[str, Run] = {}
        self._by_key: dict[str, Run] = {}
        self._finalised_traces: dict[str, None] = {}  # recent, to explain late spans
        self._lock = threading.Lock()
        self._closed = False
        self.documents: list[Path] = []

    # -- state ------------------------------------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        """The open runs."""
        with self._lock:
            return list(self._runs.values())

    def run_for(self, trace_id: str) -> Run | None:
        """The open run of a trace."""
        with self._lock:
            return self._runs.get(trace_id)

    # -- ingest -----------------------------------------------------------------------------

    def add_spans(self, records: list[dict[str, Any]]) -> None:
        """Journal span records into their runs (opening runs as needed).

        Raises :class:`Overloaded`, having written nothing, when the request would open more
        than ``max_runs`` runs.
        """
        if not records:
            return
        # A request is nearly always one trace: grouped (and routed) once, not per span.
        traces = {rec["trace_id"] for rec in records}
        if len(traces) == 1:
            by_trace = {traces.pop(): records}
        else:
            by_trace = {}
            for rec in records:
                by_trace.setdefault(rec["trace_id"], []).append(rec)
        with self._lock:
            self._check_open()
            new = sum(1 for t in by_trace if t not in self._runs)
            if new and len(self._runs) + new > self.max_runs:
                raise Overloaded(f"{len(self._runs)} runs are open (at most {self.max_runs})")
            now = self.clock()
            for trace, recs in by_trace.items():
                run = self._runs.get(trace) or self._open(trace, recs[0], now)
                # Records of one resource share its dict: each resource is looked at once.
                resources = {id(res): res for res in (rec.get("resource") or {} for rec in recs)}
                for resource in resources.values():
                    run.saw(resource, root=False)
                    self._attach(run, resource_keys(resource))
                for rec in recs:
                    if not rec.get("parent_span_id") or rec.get("parent_is_remote"):
                        run.saw(rec.get("resource") or {}, root=True)
                run.store.add_spans(recs)
                run.spans += len(recs)
                run.last_span = run.last_data = now

    def add_otlp_spans(self, traces: list[TraceSpans]) -> None:
        """Journal spans checked but not converted (:func:`otlp.scan_spans`), each trace into
        its run, as :meth:`add_spans` does with records.

        Raises :class:`Overloaded`, having written nothing, when too many runs would be open.
        """
        if not traces:
            return
        with self._lock:
            self._check_open()
            new = sum(1 for t in traces if t.trace_id not in self._runs)
            if new and len(self._runs) + new > self.max_runs:
                raise Overloaded(f"{len(self._runs)} runs are open (at most {self.max_runs})")
            now = self.clock()
            for spans in traces:
                run = self._runs.get(spans.trace_id) or self._open(spans.trace_id, spans.first, now)
                for resource in spans.resources:
                    run.saw(resource, root=False)
                    self._attach(run, resource_keys(resource))
                for resource in spans.roots:
                    run.saw(resource, root=True)
                run.store.add_otlp_spans(spans.payload, spans.resources)
                run.spans += spans.spans
                run.last_span = run.last_data = now

    def add_metrics(self, groups: list[ResourcePoints]) -> None:
        """Journal metric points into the runs of their resources, or as pending.

        Raises :class:`Overloaded`, having written nothing, when too many resources would be
        pending.
        """
        if not groups:
            return
        keyed = [(resource_keys(g.resource), g) for g in groups]
        with self._lock:
            self._check_open()
            lines = {id(g): self.pending.encode(g) for k, g in keyed if self._match(k) is None}
            if lines:
                unmatched = [k for k, g in keyed if id(g) in lines]
                if not self.pending.room_for(unmatched, sum(map(len, lines.values()))):
                    raise Overloaded(
                        f"metrics of {len(self.pending)} resources without a run are pending "
                        f"({self.pending.bytes >> 20} MiB; at most {self.pending.max_resources} "
                        f"resources and {self.pending.max_bytes >> 20} MiB)"
                    )
            if len(lines) < len(keyed):
                held = sum(r.store.held_bytes for r in self._runs.values())
                if held > self.max_series_bytes:
                    raise Overloaded(
                        f"the open runs hold {held >> 20} MiB of series "
                        f"(at most {self.max_series_bytes >> 20} MiB)"
                    )
            now = self.clock()
            for keys, group in keyed:
                run = self._match(keys)
                if run is None:
                    self.pending.add(keys, group, now, lines.get(id(group)))
                    continue
                run.store.add_metric_points(group.points)
                run.points += len(group.points)
                run.last_data = now

    def _check_open(self) -> None:
        if self._closed:
            raise Overloaded("the receiver is stopping")

    def _match(self, keys: tuple[str, ...]) -> Run | None:
        for key in keys:
            run = self._by_key.get(key)
            if run is not None:
                return run
        return None

    def _open(self, trace: str, first: dict[str, Any], now: float) -> Run:
        if trace in self._finalised_traces:
            logger.warning(
                "provtel serve: spans of trace %s arrived after its run was finalised; they go "
                "to a new run (is the grace period shorter than the ranks' exit spread?)",
                trace,
            )
        directory = create_run_dir(self.output_dir, f"{run_name(first)}-{trace[:8]}")
        write_private(directory / MARKER, json.dumps({"trace_id": trace}).encode())
        run = Run(trace, RunStore(directory, self.formats, files=self.files), now, now)
        self._runs[trace] = run
        logger.info("provtel serve: run %s opened for trace %s", directory.name, trace)
        return run

    def _attach(self, run: Run, keys: tuple[str, ...]) -> None:
        """Let ``run`` receive the metrics of a resource; move its pending points in."""
        for key in keys:
            if key in run.keys:
                continue
            run.keys.add(key)
            self._by_key[key] = run
            for points in self.pending.claim(key):
                run.store.add_metric_points(points)
                run.points += len(points)

    # -- finalisation -----------------------------------------------------------------------

    def due(self, now: float | None = None) -> list[Run]:
        """Runs the clock says are finished (not detached)."""
        now = self.clock() if now is None else now
        with self._lock:
            return [r for r in self._runs.values() if self._is_due(r, now)]

    def _is_due(self, run: Run, now: float) -> bool:
        if run.roots_complete and now - run.last_span >= self.grace_s:
            return True
        return now - run.last_data >= self.idle_s

    def tick(self) -> list[Path]:
        """Finalise the runs that are due and the pending metrics that expired."""
        now = self.clock()
        with self._lock:
            if self._closed:
                return []
            runs = [r for r in self._runs.values() if self._is_due(r, now)]
            for run in runs:
                self._detach(run)
            expired = self.pending.take_expired(now, self.idle_s)
        return self._write(runs, expired)

    def finalize_all(self) -> list[Path]:
        """Finalise every open run and every pending resource (end of ``provtel convert``)."""
        with self._lock:
            runs = list(self._runs.values())
            for run in runs:
                self._detach(run)
            expired = self.pending.take_expired(float("inf"), 0.0)
        return self._write(runs, expired)

    def _detach(self, run: Run) -> None:
        del self._runs[run.trace_id]
        for key in run.keys:
            if self._by_key.get(key) is run:
                del self._by_key[key]
        self._finalised_traces[run.trace_id] = None
        while len(self._finalised_traces) > 10_000:
            del self._finalised_traces[next(iter(self._finalised_traces))]

    def _write(self, runs: list[Run], expired: list[Path]) -> list[Path]:
        docs = []
        for run in runs:
            doc = self._finalize(run.store)
            if doc is not None:
                logger.info(
                    "provtel serve: run %s finalised: %d spans, %d metric points -> %s",
                    run.dir.name,
                    run.spans,
                    run.points,
                    doc,
                )
                docs.append(doc)
        for path in expired:
            doc = self._metrics_only(path)
            if doc is not None:
                docs.append(doc)
        self.documents.extend(docs)
        return docs

    def _finalize(self, store: RunStore) -> Path | None:
        try:
            doc = store.finalize()
        except Exception:
            logger.exception(
                "provtel serve: cannot finalise %s; its journal is kept and the next start retries",
                store.dir,
            )
            return None
        (store.dir / MARKER).unlink(missing_ok=True)
        return doc

    def _metrics_only(self, path: Path) -> Path | None:
        """A run of its own for points no span ever claimed."""
        batches = _read_pending(path)
        if not batches or not batches[0]:
            path.unlink(missing_ok=True)
            return None
        resource = batches[0][0]["resource"]
        name = local_name(str(resource.get("service.name") or "unknown_service"), 40)
        try:
            store = RunStore(
                create_run_dir(self.output_dir, f"{name}-metrics"), self.formats, files=self.files
            )
            for points in batches:
                store.add_metric_points(points)
        except OSError:
            logger.exception("provtel serve: cannot write the metrics of %s", path)
            return None
        doc = self._finalize(store)
        if doc is not None:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # leave no empty folder behind
                path.parent.rmdir()
            logger.info("provtel serve: metrics of %s never matched a run's spans -> %s", name, doc)
        return doc

    # -- restart ----------------------------------------------------------------------------

    def recover(self) -> list[Run]:
        """Reopen the unfinished runs and pending metrics under the output directory."""
        now = self.clock()
        recovered = []
        with self._lock:
            self.pending.recover(now)
            for marker in sorted(self.output_dir.glob(f"*/{MARKER}")):
                directory = marker.parent
                if is_finished(directory):
                    clean_stale(directory)  # killed between the document and the clean-up
                    marker.unlink(missing_ok=True)  # finalised; the marker outlived a crash
                    continue
                try:
                    trace = str(json.loads(marker.read_bytes())["trace_id"])
                    if (directory / JOURNAL).exists():
                        store = RunStore.reopen(directory, self.formats, files=self.files)
                    else:
                        clean_stale(directory)
                        store = RunStore(directory, self.formats, files=self.files)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    logger.error(
                        "provtel serve: cannot reopen %s (%s); left as it is", directory, exc
                    )
                    continue
                if trace in self._runs:
                    logger.warning(
                        "provtel serve: %s and %s hold the same trace; %s is left as it is",
                        self._runs[trace].dir,
                        directory,
                        directory,
                    )
                    store.close()
                    continue
                run = Run(trace, store, now, now)
                resources, root_resources, run.spans = _scan_journal(directory / JOURNAL)
                self._runs[trace] = run
                for rid, attributes in resources.items():
                    run.saw(attributes, root=rid in root_resources)
                    self._attach(run, resource_keys(attributes))
                recovered.append(run)
                logger.info(
                    "provtel serve: reopened run %s (trace %s, %d spans so far)",
                    directory.name,
                    trace,
                    run.spans,
                )
        for path in self.pending.leftovers():
            self._metrics_only(path)
        return recovered

    def close(self) -> None:
        """Close every open run's journal without finalising (a restart continues them);
        later records are refused with :class:`Overloaded`. The output folder is unlocked.
        Idempotent."""
        with self._lock:
            self._closed = True
            for run in self._runs.values():
                try:
                    run.store.close()
                except OSError:
                    logger.exception("provtel serve: cannot close %s", run.dir)
            try:
                self.files.close()
            except OSError:
                logger.exception("provtel serve: cannot close the series files")
            if self._lock_fd is not None:
                _unlock_output(self.output_dir, self._lock_fd)
                self._lock_fd = None


def _series_file_limit() -> int:
    """How many series files the router keeps open: half the descriptors this process may
    have (the rest for connections, journals and pending files), at most 4096."""
    try:
        soft, _ = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 64
    if soft == rlimit.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, soft // 2))


def _lock_output(output_dir: Path) -> int:
    """Take the output folder's exclusive lock; :class:`OutputInUse` when another process has
    it. Returns the lock file's descriptor (:func:`_unlock_output` releases it).

    The lock file is removed when released, so a folder nobody writes holds no lock file; a
    lock taken on a file another process was just removing is checked (same inode as the path)
    and taken again on the new file."""
    make_dirs(output_dir)
    path = output_dir / LOCK_FILE
    for _ in range(100):
        fd = open_private(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputInUse(
                    f"{output_dir} is in use by another provtel receiver or converter "
                    f"({holder}); give each one its own --output"
                ) from None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the previous holder removed it meanwhile: lock the new file
    raise OutputInUse(f"cannot lock {path}: it keeps being replaced")


def _unlock_output(output_dir: Path, fd: int) -> None:
    """Remove the lock file, then release the lock (in that order: see :func:`_lock_output`)."""
    with contextlib.suppress(OSError):
        (output_dir / LOCK_FILE).unlink()
    os.close(fd)


def _scan_journal(path: Path) -> tuple[dict[str, dict[str, Any]], set[str], int]:
    """A journal's resources (by id), the ids of resources that sent a root span, and its
    span count."""
    resources: dict[str, dict[str, Any]] = {}
    roots: set[str] = set()
    spans = 0
    for rec in journal.read(path):
        if rec.kind == journal.SPAN:
            spans += 1
            if _is_root(rec.data):
                roots.add(str(rec.data.get("resource")))
        elif rec.kind == journal.RESOURCE:
            resources[rec.data["id"]] = rec.data["attributes"]
    return resources, roots, spans
