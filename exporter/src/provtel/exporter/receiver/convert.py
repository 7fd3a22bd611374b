"""``provtel convert``: OTLP/JSON files (the Collector's file exporter) -> PROV documents.

Each line of an input file is one OTLP/JSON request, ``{"resourceSpans": [...]}`` or
``{"resourceMetrics": [...]}`` (log lines are skipped), exactly what the Collector's ``file``
exporter writes and what ``provtel serve --archive`` writes; a file holding a single
(pretty-printed) request also works, and ``.gz`` files are read compressed. The requests go
through the receiver's own path -- :mod:`provtel.exporter.prov.otlp` and the
:class:`~provtel.exporter.receiver.runs.Router` -- in file order, and every run is finalised at the
end, so the same telemetry gives the same documents as ``provtel serve``.
"""

from __future__ import annotations

import gzip
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provtel.exporter.prov.otlp import OtlpError, convert_metrics, convert_spans, parse_json
from provtel.exporter.receiver.runs import Router

logger = logging.getLogger(__name__)

_TRACES = ("resourceSpans", "resource_spans")
_METRICS = ("resourceMetrics", "resource_metrics")
_LOGS = ("resourceLogs", "resource_logs")


@dataclass
class ConvertResult:
    """What a conversion wrote and what it could not read."""

    documents: list[Path] = field(default_factory=list)
    spans: int = 0
    points: int = 0
    rejected: int = 0
    #: ``file:line: reason`` for every line that was skipped.
    problems: list[str] = field(default_factory=list)


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_requests(path: Path, problems: list[str]) -> Iterator[Any]:
    """The requests in one file, in order; unreadable lines are skipped into ``problems``."""
    with _open(path) as src:
        first = True
        for lineno, line in enumerate(src, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                if first:  # maybe one pretty-printed request
                    src.seek(0)
                    try:
                        obj = json.loads(src.read())
                    except ValueError:
                        problems.append(f"{path}:{lineno}: not JSON: {exc}")
                        return
                    request = _request(obj, path, lineno, problems)
                    if request is not None:
                        yield request
                    return
                problems.append(f"{path}:{lineno}: not JSON: {exc}")
                continue
            first = False
            request = _request(obj, path, lineno, problems)
            if request is not None:
                yield request


def _request(obj: Any, path: Path, lineno: int, problems: list[str]) -> Any:
    if not isinstance(obj, dict):
        problems.append(f"{path}:{lineno}: not an OTLP/JSON request")
        return None
    try:
        if any(k in obj for k in _TRACES):
            return parse_json(obj, ExportTraceServiceRequest)
        if any(k in obj for k in _METRICS):
            return parse_json(obj, ExportMetricsServiceRequest)
    except OtlpError as exc:
        problems.append(f"{path}:{lineno}: {exc}")
        return None
    if not any(k in obj for k in _LOGS):
        problems.append(f"{path}:{lineno}: neither resourceSpans nor resourceMetrics")
    return None


def convert_files(
    paths: Iterable[Path], output_dir: Path, formats: Sequence[str] = ("json",)
) -> ConvertResult:
    """Convert OTLP/JSON files into one PROV document per run under ``output_dir``."""
    result = ConvertResult()
    router = Router(
        output_dir,
        formats=formats,
        grace_s=float("inf"),
        idle_s=float("inf"),
        max_runs=sys.maxsize,  # a file is finite; every run stays open until the end
        max_pending_resources=sys.maxsize,
    )
    for path in paths:
        for request in read_requests(Path(path), result.problems):
            if isinstance(request, ExportTraceServiceRequest):
                spans = convert_spans(request)
                router.add_spans(spans.records)
                result.spans += len(spans.records)
                result.rejected += spans.rejected
            else:
                metrics = convert_metrics(request)
                router.add_metrics(metrics.groups)
                result.points += sum(len(g.points) for g in metrics.groups)
                result.rejected += metrics.rejected
    result.documents = router.finalize_all()
    for problem in result.problems:
        logger.warning("provtel convert: skipped %s", problem)
    return result
