"""The running receiver: both transports, the finaliser thread, start and stop."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc

from provtel.exporter.receiver.core import Receiver, ReceiverConfig
from provtel.exporter.receiver.decode import Ingest
from provtel.exporter.receiver.grpc_server import start_grpc_server
from provtel.exporter.receiver.http_server import HttpServer, start_http_server
from provtel.exporter.receiver.limits import ServeLimits
from provtel.exporter.receiver.tls import server_context

logger = logging.getLogger(__name__)


class ReceiverServer:
    """``provtel serve`` as an object: ``start()``, then ``stop()``.

    ``start()`` first reopens the runs a previous receiver left unfinished, then listens.
    ``stop()`` stops listening, lets requests in progress finish, and closes the open runs'
    journals *without* finalising them: the next start continues them. ``limits`` are the
    transports' deadlines and memory bounds (:class:`ServeLimits`; defaults when None).
    """

    def __init__(self, config: ReceiverConfig, limits: ServeLimits | None = None) -> None:
        self.config = config
        self.limits = limits or ServeLimits()
        if config.tls_cert is not None:
            server_context(config.tls_cert, config.tls_key)  # TlsError now, not at listen
        self.receiver = Receiver(config)
        if self.receiver.prometheus is not None:
            self.receiver.prometheus.max_bytes = self.limits.max_series_bytes
        self.ingest = Ingest(
            self.receiver, self.limits.decode_budget_bytes, self.limits.decode_chunk_bytes
        )
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc: grpc.Server | None = None
        self._http: HttpServer | None = None
        self._stop = threading.Event()
        self._finaliser: threading.Thread | None = None

    @property
    def output_dir(self) -> Path:
        """Where the run folders are written."""
        return self.config.output_dir

    def start(self) -> None:
        """Recover, then listen on the configured ports (port 0: any free port)."""
        recovered = self.receiver.recover()
        if recovered:
            logger.info("provtel serve: continuing %d unfinished run(s)", recovered)
        try:
            if self.config.grpc_port is not None:
                self._grpc, self.grpc_port = start_grpc_server(self.ingest)
            if self.config.http_port is not None:
                self._http = start_http_server(self.ingest, self.limits)
                self.http_port = self._http.port
        except BaseException:
            self.stop()
            raise
        interval = max(0.05, min(1.0, self.config.grace_s / 4))
        self._finaliser = threading.Thread(
            target=self._finalise_loop, args=(interval,), name="provtel-finaliser", daemon=True
        )
        self._finaliser.start()

    def _finalise_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.receiver.tick()
            except Exception:
                logger.exception("provtel serve: finalising failed; will try again")

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening, wait up to ``grace_s`` for requests in progress, close the runs.

        Requests that arrive on still-open HTTP connections meanwhile are answered 503 (retry).
        """
        self._stop.set()
        deadline = time.monotonic() + grace_s
        if self._http is not None:
            self._http.stop(grace_s)
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait(grace_s + 1)
            self._grpc = None
        if self._finaliser is not None:
            self._finaliser.join()
            self._finaliser = None
        while self.receiver.budget.used and time.monotonic() < deadline:
            time.sleep(0.02)
        self.receiver.close()

    def request_stop(self) -> None:
        """Make :meth:`wait` return (safe in a signal handler)."""
        self._stop.set()

    def wait(self) -> None:
        """Block until :meth:`request_stop` or :meth:`stop` is called."""
        while not self._stop.wait(0.5):  # a timeout keeps the main thread responsive to signals
            pass
