"""``provtel convert``: OTLP/JSON files (the Collector's file exporter) -> PROV documents.

Each line of an input file is one OTLP/JSON request, ``{"resourceSpans": [...]}`` or
``{"resourceMetrics": [...]}`` (log lines are skipped), exactly what the Collector's ``file``
exporter writes and what ``provtel serve --archive`` writes; a file holding a single
(pretty-printed) request also works, and ``.gz`` files are read compressed. Lines are read as
bytes and bounded in length (``--max-line-mib``); a line that is not UTF-8, not JSON, nested too
deeply or too long, and a ``.gz`` that is truncated or not gzip, is one problem line each, and
everything else is still converted. The requests go
through the receiver's own path -- :mod:`provtel.exporter.prov.otlp` and the
:class:`~provtel.exporter.receiver.runs.Router` -- in file order, and every run is finalised at the
end, so the same telemetry gives the same documents as ``provtel serve``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provtel.exporter.prov.otlp import OtlpError, convert_metrics, convert_spans, parse_json
from provtel.exporter.receiver.runs import Router

logger = logging.getLogger(__name__)

MiB = 1024 * 1024

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


#: Longest line read by default; a longer one is skipped with a problem, never held whole.
MAX_LINE_BYTES = 64 * MiB


class _Unreadable(Exception):
    """The rest of a file cannot be read (a truncated or non-gzip ``.gz``)."""


def _open(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _lines(src: io.BufferedIOBase, limit: int) -> Iterator[bytes | None]:
    """The lines of a binary stream, each at most ``limit`` bytes; None for a longer one, whose
    bytes are skipped a block at a time (never held whole)."""
    while True:
        try:
            line = src.readline(limit + 1)
            if len(line) > limit and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = src.readline(1 << 20)
                yield None
                continue
        except (OSError, EOFError, zlib.error) as exc:  # gzip: BadGzipFile is an OSError
            raise _Unreadable(str(exc) or type(exc).__name__) from None
        if not line:
            return
        yield line


def _json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def read_requests(
    path: Path, problems: list[str], max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Any]:
    """The requests in one file, in order; unreadable lines are skipped into ``problems``.

    Lines are read as bytes, one at a time and at most ``max_line_bytes`` long; a file holding
    one pretty-printed request is read whole only when it is within that size too. A ``.gz``
    that is truncated or not gzip at all keeps what was read before the damage.
    """
    lineno = 0
    try:
        with _open(path) as src:
            first = True
            for line in _lines(src, max_line_bytes):
                lineno += 1
                if line is None:
                    problems.append(
                        f"{path}:{lineno}: line longer than {_mib(max_line_bytes)} MiB "
                        "(--max-line-mib); skipped"
                    )
                    first = False
                    continue
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = _json(line)
                except ValueError as exc:
                    if first and line[:1] in (b"{", b"["):  # maybe one pretty-printed request
                        whole = _whole(path, max_line_bytes)
                        if whole is not None:
                            request = _request(whole, path, 1, problems)
                            if request is not None:
                                yield request
                            return
                    problems.append(f"{path}:{lineno}: {exc}")
                    first = False
                    continue
                first = False
                request = _request(obj, path, lineno, problems)
                if request is not None:
                    yield request
    except _Unreadable as exc:
        problems.append(f"{path}:{lineno + 1}: cannot read further: {exc}")


def _mib(n: int) -> str:
    return f"{n / MiB:g}"


def _whole(path: Path, limit: int) -> Any:
    """The file as one JSON document, when it is one and not larger than ``limit``."""
    try:
        with _open(path) as src:
            data = src.read(limit + 1)
    except (OSError, EOFError, zlib.error):
        return None
    if len(data) > limit:
        return None
    try:
        return _json(data)
    except ValueError:
        return None


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
    except RecursionError:
        problems.append(f"{path}:{lineno}: nested too deeply")
        return None
    if not any(k in obj for k in _LOGS):
        problems.append(f"{path}:{lineno}: neither resourceSpans nor resourceMetrics")
    return None


def convert_files(
    paths: Iterable[Path],
    output_dir: Path,
    formats: Sequence[str] = ("json",),
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ConvertResult:
    """Convert OTLP/JSON files into one PROV document per run under ``output_dir``.

    Whatever goes wrong with one line or one file is a problem of that line or file: every run
    read so far is still finalised. Raises :class:`~provtel.exporter.receiver.runs.OutputInUse`
    when a receiver is writing to ``output_dir``.
    """
    result = ConvertResult()
    router = Router(
        output_dir,
        formats=formats,
        grace_s=float("inf"),
        idle_s=float("inf"),
        max_runs=sys.maxsize,  # a file is finite; every run stays open until the end
        max_pending_resources=sys.maxsize,
        max_pending_bytes=sys.maxsize,
        max_series_bytes=sys.maxsize,
    )
    try:
        for path in paths:
            for request in read_requests(Path(path), result.problems, max_line_bytes):
                try:
                    _convert(request, router, result)
                except RecursionError:
                    result.problems.append(f"{path}: a request nested too deeply; skipped")
    finally:
        try:
            result.documents = router.finalize_all()
        finally:
            router.close()
    for problem in result.problems:  # the CLI prints them; a library caller reads .problems
        logger.info("provtel convert: skipped %s", problem)
    return result


def _convert(request: Any, router: Router, result: ConvertResult) -> None:
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
