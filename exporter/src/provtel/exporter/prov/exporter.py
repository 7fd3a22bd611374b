"""The PROV span and metric exporters for the OpenTelemetry SDK.

Both exporters of a process share one run (a :class:`RunSession`): spans and metric points are
journaled as they arrive, and the document is written when the last of them shuts down (the SDK
shuts the span exporter down last at exit). Errors never reach the application: the first one is
logged as one clear line and the session stops writing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from provtel.exporter import job
from provtel.exporter.environment_variables import (
    OTEL_PYTHON_PROVTEL_FORMATS,
    OTEL_PYTHON_PROVTEL_OUTPUT_DIR,
    OTEL_PYTHON_PROVTEL_UPLOAD_URL,
)
from provtel.exporter.prov.formats import parse_formats
from provtel.exporter.prov.records import metric_points, span_record
from provtel.exporter.prov.store import RunStore, create_run_dir, merge_when_complete
from provtel.exporter.prov.values import local_name
from provtel.exporter.report.summary import print_summary
from provtel.exporter.run_name import default_run_name
from provtel.semconv.workers import pool_worker

if os.environ.get(OTEL_PYTHON_PROVTEL_UPLOAD_URL):
    # The upload client (urllib, http.client) is loaded only by runs that upload, and then
    # now rather than at exit: defining dataclasses during interpreter finalisation loses a
    # Ctrl-C's exit status (see provtel.exporter.report.summary).
    import provtel.exporter.upload  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "prov"
#: Memory metric points may hold while they wait for the process's first span, about; beyond
#: it the run folder is created and they are written.
_MAX_PENDING_BYTES = 32 * 1024 * 1024


def _point_bytes(point: dict[str, Any]) -> int:
    """About what one metric point record holds in memory (its resource is shared)."""
    attributes = point.get("attributes") or {}
    return 700 + sum(len(str(k)) + len(str(v)) for k, v in attributes.items())


def upload_after_run(document: Path) -> None:
    """Upload a written document when ``OTEL_PYTHON_PROVTEL_UPLOAD_URL`` is set (never raises;
    see :func:`provtel.exporter.upload.upload_after_run`)."""
    if os.environ.get(OTEL_PYTHON_PROVTEL_UPLOAD_URL):
        from provtel.exporter import upload

        upload.upload_after_run(document)


class RunSession:
    """One run's output shared by the exporters of a process."""

    def __init__(self, output_dir: Path, formats: tuple[str, ...], run_name: str) -> None:
        self.job = job.detect()
        if self.job.multi_rank:
            # <output>/<run>-<job>-<launch>/rank<R>-...: every rank its own folder, merged when
            # all end; <launch> keeps a reused job id (another cluster, a later job) apart
            job_name = local_name(f"{run_name}-{self.job.job_id}", 90)
            output_dir = output_dir / f"{job_name}-{self.job.launch}"
            run_name = f"rank{self.job.rank}"
        self.output_dir = output_dir
        self.formats = formats
        self.run_name = run_name
        self.document: Path | None = None
        self._lock = threading.Lock()
        self._store: RunStore | None = None
        self._users = 0
        self._span_exporters = 0
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._failed = False
        self._pid = os.getpid()

    def _fail(self, what: str, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            logger.error(
                "provtel: %s: %s; no further provenance is recorded for this run "
                "(the run continues)",
                what,
                exc,
            )

    def _get_store(self) -> RunStore | None:
        if self._store is None and not self._failed:
            try:
                self._store = RunStore(create_run_dir(self.output_dir, self.run_name), self.formats)
            except OSError as exc:
                self._fail(f"cannot write PROV output under {self.output_dir}", exc)
        return self._store

    def _usable(self) -> bool:
        # A forked child (DataLoader worker) inherits the session but must not touch the
        # parent's files; it records nothing of its own. Nor does a pool's worker process,
        # whatever its start method: its tasks belong to the parent's run.
        return os.getpid() == self._pid and not self._failed and not pool_worker()

    def acquire(self, spans: bool = False) -> None:
        """Register an exporter; ``spans`` for a span exporter."""
        with self._lock:
            self._users += 1
            self._span_exporters += spans

    def add(self, method: str, records: Any) -> bool:
        """Hand records to the store; False when they could not be kept."""
        with self._lock:
            if not self._usable() or self.document is not None:
                return False
            # A run is what has spans: a process that never traces anything (a launcher such
            # as torchrun's agent, a DataLoader worker started with spawn) leaves no folder
            # behind. Its metric points wait here until the first span arrives.
            if (
                self._store is None
                and method == "add_metric_points"
                and self._span_exporters
                and self._pending_bytes < _MAX_PENDING_BYTES
            ):
                self._pending.extend(records)
                self._pending_bytes += sum(map(_point_bytes, records))
                return True
            store = self._get_store()
            if store is None:
                return False
            try:
                if self._pending:
                    pending, self._pending, self._pending_bytes = self._pending, [], 0
                    store.add_metric_points(pending)
                getattr(store, method)(records)
                return True
            except Exception as exc:  # disk full, permissions changed: never raise into the SDK
                self._fail(f"cannot write to {store.dir}", exc)
                return False

    def release(self) -> None:
        """Drop one user; the last one writes the document."""
        with self._lock:
            self._users -= 1
            if self._users > 0 or not self._usable() or self._store is None:
                if self._users <= 0:
                    self._pending, self._pending_bytes = [], 0  # a process that traced nothing
                return
            if self.document is not None:
                return
            try:
                self.document = self._store.finalize(keep_journal=self.job.multi_rank)
                logger.info("provtel: provenance written to %s", self.document)
                if self.job.multi_rank and self.job.world_size:
                    merged = merge_when_complete(self.output_dir, self.job.world_size, self.formats)
                    if merged is not None:
                        logger.info("provtel: job provenance merged into %s", merged)
                        upload_after_run(merged)  # a rank's own document is only a part
                        print_summary(merged)  # OTEL_PYTHON_PROVTEL_SUMMARY=false: off
                elif not self.job.multi_rank:
                    upload_after_run(self.document)  # when OTEL_PYTHON_PROVTEL_UPLOAD_URL is set
                    print_summary(self.document)  # OTEL_PYTHON_PROVTEL_SUMMARY=false: off
            except Exception as exc:
                self._fail(f"cannot write the PROV document in {self._store.dir}", exc)


_sessions: dict[tuple[Path, tuple[str, ...], str], RunSession] = {}
_sessions_lock = threading.Lock()


def get_session(
    output_dir: str | os.PathLike[str] | None = None, formats: Sequence[str] | None = None
) -> RunSession:
    """The process's session for an output directory (created on first use)."""
    directory = Path(
        output_dir or os.environ.get(OTEL_PYTHON_PROVTEL_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR
    ).absolute()
    fmts = tuple(formats) if formats else parse_formats(os.environ.get(OTEL_PYTHON_PROVTEL_FORMATS))
    key = (directory, fmts, default_run_name())
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None or session.document is not None or session._pid != os.getpid():
            session = _sessions[key] = RunSession(*key)
        return session


class ProvSpanExporter(SpanExporter):
    """Journal finished spans; write the PROV document at shutdown.

    Configured from the environment (``OTEL_PYTHON_PROVTEL_OUTPUT_DIR``,
    ``OTEL_PYTHON_PROVTEL_FORMATS``, ``OTEL_PYTHON_PROVTEL_RUN_NAME``) or the arguments.
    """

    def __init__(
        self, output_dir: str | os.PathLike[str] | None = None, formats: Sequence[str] | None = None
    ) -> None:
        self.session = get_session(output_dir, formats)
        self.session.acquire(spans=True)
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut:
            return SpanExportResult.FAILURE
        try:
            resources: dict[int, dict[str, Any]] = {}  # one converted resource per export
            records = [span_record(s, resources) for s in spans]
        except Exception as exc:  # a span the SDK accepted but we cannot read
            logger.exception("provtel: cannot convert spans: %s", exc)
            return SpanExportResult.FAILURE
        ok = self.session.add("add_spans", records)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if not self._shut:
            self._shut = True
            self.session.release()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


_CUMULATIVE: dict[type, AggregationTemporality] = {
    cls: AggregationTemporality.CUMULATIVE
    for cls in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}


class ProvMetricExporter(MetricExporter):
    """Append metric data points to series files beside the run's PROV document.

    Temporality is cumulative for every instrument, so energy counters keep their running
    totals and differences are computed where needed.
    """

    def __init__(
        self, output_dir: str | os.PathLike[str] | None = None, formats: Sequence[str] | None = None
    ) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self.session = get_session(output_dir, formats)
        self.session.acquire()
        self._shut = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self._shut:
            return MetricExportResult.FAILURE
        try:
            points = list(metric_points(metrics_data))
        except Exception as exc:
            logger.exception("provtel: cannot convert metrics: %s", exc)
            return MetricExportResult.FAILURE
        ok = self.session.add("add_metric_points", points)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if not self._shut:
            self._shut = True
            self.session.release()
