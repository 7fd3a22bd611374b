"""The transport-independent part of ``provtel serve``: configuration, admission, export.

Both transports (:mod:`.grpc_server`, :mod:`.http_server`) do the same four things per request:
check the bearer token, reserve the request's size in the in-flight budget (or answer "retry
later"), decode it (or answer "malformed"), and call :meth:`Receiver.export_traces` or
:meth:`Receiver.export_metrics`, which journal what they keep before returning; only then is
the request acknowledged.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from provtel.exporter.prov.files import AppendFile, cut_torn_tail, make_dirs
from provtel.exporter.prov.otlp import (
    SpanBatch,
    SpanScan,
    convert_metrics,
    convert_spans,
    scan_spans,
    to_json,
)
from provtel.exporter.receiver.prometheus import PrometheusView
from provtel.exporter.receiver.runs import Overloaded, Router

logger = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True)
class ReceiverConfig:
    """Settings of ``provtel serve`` (its command-line options set them)."""

    #: Where run folders are written.
    output_dir: Path = Path("prov")
    #: Address to listen on; ``0.0.0.0`` to accept other hosts (a container).
    host: str = "127.0.0.1"
    #: OTLP/gRPC port (None: no gRPC server; 0: any free port).
    grpc_port: int | None = 4317
    #: OTLP/HTTP port, also serving ``/metrics`` (None: no HTTP server; 0: any free port).
    http_port: int | None = 4318
    #: Bearer token every request must carry (``Authorization: Bearer <token>``); None: none.
    token: str | None = field(default=None, repr=False)
    #: PEM certificate chain and key: serve TLS on both ports.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Largest request accepted, compressed and decompressed (gRPC's default is 4 MiB).
    max_message_bytes: int = 4 * MiB
    #: Requests being decoded and journaled at once, in bytes; beyond it clients are told to
    #: retry later. Memory in use is about 15 times this at worst.
    max_inflight_bytes: int = 32 * MiB
    #: Open runs at most; spans of a new trace beyond it are refused with "retry later".
    max_runs: int = 256
    #: Resources whose metrics wait for a run, at most.
    max_pending_resources: int = 10_000
    #: Seconds without spans, after a root span arrived, before a run is finalised.
    grace_s: float = 30.0
    #: Seconds without any data before a run (or pending metrics) is finalised anyway.
    idle_timeout_s: float = 1800.0
    #: PROV serialisations besides ``json``.
    formats: tuple[str, ...] = ("json",)
    #: Also append every acknowledged request to this file as OTLP/JSON lines.
    archive: Path | None = None
    #: Series ``/metrics`` holds at most (0: no ``/metrics``).
    max_series: int = 10_000
    #: gRPC worker threads, and RPCs in progress at most.
    grpc_workers: int = 8
    grpc_max_concurrent_rpcs: int = 64
    #: HTTP connections served at once; more are answered 503.
    max_connections: int = 128
    #: Seconds a client may take to send a request (slow clients are cut off).
    read_timeout_s: float = 30.0
    #: Seconds a client is told to wait before retrying (Retry-After, RetryInfo).
    retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_inflight_bytes < self.max_message_bytes:
            raise ValueError("max_inflight_bytes must be at least max_message_bytes")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")


class InflightBudget:
    """Bytes of requests in progress, bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def acquire(self, n: int) -> bool:
        """Reserve ``n`` bytes; False when that would pass the limit."""
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        """Give back what :meth:`acquire` reserved."""
        with self._lock:
            self.used -= n

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[bool]:
        """``with budget.reserve(n) as ok:`` -- released on exit when it was granted."""
        ok = self.acquire(n)
        try:
            yield ok
        finally:
            if ok:
                self.release(n)


class _Archive:
    """Acknowledged requests as OTLP/JSON lines (the Collector file exporter's format).

    Private as run folders are (the configured file mode, 0600 by default), and appended a
    whole line at a time, as the journal is: a line torn by a kill or a full disk is cut when
    the archive is opened again."""

    def __init__(self, path: Path) -> None:
        make_dirs(path.parent)  # a folder the user names: their umask, as for --output
        self.path = path
        cut_torn_tail(path)
        self._file: AppendFile | None = AppendFile(path)

    def write(self, line: str) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.append((line + "\n").encode("utf-8", "surrogatepass"))

    def close(self) -> None:
        """Close the archive. Idempotent."""
        out, self._file = self._file, None
        if out is not None:
            out.close()


@dataclass
class Stats:
    """Counters of what the receiver took and refused, logged at shutdown (approximate: the
    transports' threads update them without a lock)."""

    spans: int = 0
    points: int = 0
    rejected_spans: int = 0
    rejected_points: int = 0
    refused_requests: int = 0


class Receiver:
    """Runs, finalisation and the export operations; the transports call into it."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.router = Router(
            config.output_dir,
            formats=config.formats,
            grace_s=config.grace_s,
            idle_s=config.idle_timeout_s,
            max_runs=config.max_runs,
            max_pending_resources=config.max_pending_resources,
        )
        self.budget = InflightBudget(config.max_inflight_bytes)
        self.prometheus = PrometheusView(config.max_series) if config.max_series > 0 else None
        self.stats = Stats()
        self._token = config.token.encode() if config.token else None
        self._archive = _Archive(config.archive) if config.archive else None
        # With an archive, journal and archive must see requests in the same order.
        self._order = threading.Lock()

    # -- admission --------------------------------------------------------------------------

    @property
    def needs_token(self) -> bool:
        """Whether requests must carry a bearer token."""
        return self._token is not None

    def token_ok(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header (or gRPC metadata) value is acceptable."""
        if self._token is None:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    # -- export -----------------------------------------------------------------------------

    def _journal(self, add: Callable[[Any], None], payload: Any, request: Any) -> None:
        """Hand converted records to the router (which journals them) before acknowledging."""
        with self._ordered():
            try:
                add(payload)
            except Overloaded:
                self.stats.refused_requests += 1
                raise
            except OSError as exc:  # disk full, permissions: not the client's fault; retry later
                self.stats.refused_requests += 1
                logger.error("provtel serve: cannot journal a request: %s", exc)
                raise Overloaded(f"the receiver cannot write: {exc}", 5.0) from exc
            if self._archive is not None:
                self._archive.write(to_json(request))

    def export_traces(
        self, request: ExportTraceServiceRequest | Message, raw: bytes | None = None
    ) -> ExportTraceServiceResponse:
        """Journal a trace request (``raw``: its encoding, when at hand); raises
        :class:`Overloaded` (nothing kept) to refuse it.

        A :data:`~provtel.exporter.prov.otlp.SpansRequest` is only checked and journaled as
        OTLP (:func:`~provtel.exporter.prov.otlp.scan_spans`), its spans converted when the
        run is finalised; other requests, and those whose spans write series rows, are
        converted now."""
        scan = scan_spans(request, raw)
        batch: SpanScan | SpanBatch
        if scan is not None:
            batch = scan
            self._journal(self.router.add_otlp_spans, scan.traces, request)
            self.stats.spans += scan.spans
        else:
            batch = convert_spans(request)
            self._journal(self.router.add_spans, batch.records, request)
            self.stats.spans += len(batch.records)
        response = ExportTraceServiceResponse()
        if batch.rejected:
            self.stats.rejected_spans += batch.rejected
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=batch.rejected, error_message=batch.error)
            )
        return response

    def export_metrics(self, request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        """Journal a metrics request; raises :class:`Overloaded` (nothing kept) to refuse it."""
        batch = convert_metrics(request)
        self._journal(self.router.add_metrics, batch.groups, request)
        if self.prometheus is not None:
            self.prometheus.update(request)
        self.stats.points += sum(len(g.points) for g in batch.groups)
        response = ExportMetricsServiceResponse()
        if batch.rejected:
            self.stats.rejected_points += batch.rejected
            response.partial_success.CopyFrom(
                ExportMetricsPartialSuccess(
                    rejected_data_points=batch.rejected, error_message=batch.error
                )
            )
        return response

    def _ordered(self) -> contextlib.AbstractContextManager[object]:
        return self._order if self._archive is not None else contextlib.nullcontext()

    # -- life cycle -------------------------------------------------------------------------

    def recover(self) -> int:
        """Reopen what a previous receiver left unfinished; return how many runs."""
        return len(self.router.recover())

    def tick(self) -> list[Path]:
        """Finalise what is due (called periodically by the server)."""
        return self.router.tick()

    def close(self) -> None:
        """Close journals without finalising, so that a restart continues the open runs."""
        self.router.close()
        if self._archive is not None:
            self._archive.close()
        logger.info("provtel serve: stopped; %s", self.stats)
