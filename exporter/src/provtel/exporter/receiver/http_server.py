"""OTLP/HTTP: ``POST /v1/traces`` and ``POST /v1/metrics``; also ``GET /metrics``, ``GET /healthz``.

A standard-library ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive), one thread per connection,
at most ``max_connections`` at once. Bodies are binary protobuf (``application/x-protobuf``) or
OTLP/JSON (``application/json``), optionally ``Content-Encoding: gzip``, with a
``Content-Length`` or chunked. The response has the request's content type.

Status codes (OTLP specification, "OTLP/HTTP Response"); error bodies are a
``google.rpc.Status``:

=========== =====================================================================================
200         accepted; ``partial_success`` says how many items were rejected and why
400         the body cannot be decoded (protobuf, JSON, hex ids, gzip)
401         a token is configured and the request lacks it or has another (``WWW-Authenticate``)
404 / 405   another path / method
411         no ``Content-Length`` and not chunked
413         body larger than ``max_message_bytes``, compressed or decompressed
415         another ``Content-Type`` or ``Content-Encoding``
503         the in-flight budget, the open runs or the connections are full: ``Retry-After``
            (retryable; the OTel exporters retry 429, 502, 503, 504)
500         a bug; logged
=========== =====================================================================================

A refused request's body is read and dropped (up to ``max_message_bytes``) so that the client
reads the answer and the connection goes on; a larger body, or one of unknown length, closes
the connection after the answer.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provtel.exporter.prov.otlp import OtlpError, parse_json, parse_protobuf
from provtel.exporter.receiver.core import Receiver
from provtel.exporter.receiver.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from provtel.exporter.receiver.runs import Overloaded

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_SIGNALS: dict[str, tuple[type[Any], str]] = {
    "/v1/traces": (ExportTraceServiceRequest, "export_traces"),
    "/v1/metrics": (ExportMetricsServiceRequest, "export_metrics"),
}
_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    411: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


class _Refused(Exception):
    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class _Handler(BaseHTTPRequestHandler):
    _unread: int | None = None
    _client_closes = False
    protocol_version = "HTTP/1.1"
    server_version = "provtel-serve"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Slow or silent clients are cut off instead of holding a thread forever.
        self.connection.settimeout(self.server.receiver.config.read_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("provtel serve: %s " + format, self.address_string(), *args)

    # -- responses ------------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, refused: _Refused, json_body: bool) -> None:
        status = status_pb2.Status(
            code=_GRPC_CODES.get(refused.status, code_pb2.UNKNOWN), message=str(refused)
        )
        headers = {}
        if refused.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(refused.retry_after_s)))
        if refused.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="provtel"'
        if json_body:
            body, ctype = json_format.MessageToJson(status, indent=None).encode(), JSON
        else:
            body, ctype = status.SerializeToString(), PROTOBUF
        self._send(refused.status, body, ctype, headers)

    # -- POST -----------------------------------------------------------------------------------

    def do_POST(self) -> None:
        receiver = self.server.receiver
        json_body = self.headers.get("Content-Type", "").split(";")[0].strip().lower() == JSON
        self._client_closes = self.close_connection
        self._unread = self._declared_length()
        try:
            self._post(receiver, json_body)
        except _Refused as refused:
            self._skip_body(receiver.config.max_message_bytes)
            self._error(refused, json_body)
        except (OSError, ssl.SSLError):
            self.close_connection = True  # the client went away or timed out
        except Exception:
            logger.exception("provtel serve: cannot handle an HTTP export")
            self.close_connection = True
            self._error(_Refused(500, "internal error; see the receiver's log"), json_body)

    def _declared_length(self) -> int | None:
        """Bytes of body still to read; None when unknown (chunked, or a bad header)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            return 0
        try:
            size = int(length)
        except ValueError:
            return None
        return size if size >= 0 else None

    def _skip_body(self, limit: int) -> None:
        """Read and drop the body of a refused request, so that the client reads the answer
        (instead of a reset) and the connection serves its next request; too large or of unknown
        length: close the connection instead."""
        unread = self._unread
        if unread is None or unread > limit:
            self.close_connection = True
            return
        try:
            while unread > 0:
                chunk = self.rfile.read(min(unread, 65_536))
                if not chunk:
                    self.close_connection = True
                    return
                unread -= len(chunk)
        except OSError:
            self.close_connection = True
            return
        self._unread = 0
        self.close_connection = self._client_closes

    def _post(self, receiver: Receiver, json_body: bool) -> None:
        config = receiver.config
        path = urlsplit(self.path).path
        signal = _SIGNALS.get(path)
        if signal is None:
            raise _Refused(404, f"no OTLP endpoint at {path} (use /v1/traces or /v1/metrics)")
        if not receiver.token_ok(self.headers.get("Authorization")):
            raise _Refused(401, "missing or wrong bearer token")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            raise _Refused(415, f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type!r}")
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise _Refused(415, f"Content-Encoding must be gzip or identity, not {encoding!r}")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = self.headers.get("Content-Length")
        if chunked:
            size = config.max_message_bytes
        elif length is None:
            raise _Refused(411, "Content-Length required")
        else:
            try:
                size = int(length)
            except ValueError:
                raise _Refused(400, f"bad Content-Length {length!r}") from None
            if size < 0:
                raise _Refused(400, f"bad Content-Length {length!r}")
            if size > config.max_message_bytes:
                raise _Refused(413, f"body of {size} bytes > {config.max_message_bytes}")
        with receiver.budget.reserve(size) as admitted:
            if not admitted:
                receiver.stats.refused_requests += 1
                raise _Refused(503, "receiver busy: retry later", config.retry_after_s)
            body = self._read_chunked(config.max_message_bytes) if chunked else self._read(size)
            self._unread = 0
            if encoding == "gzip":
                body = _gunzip(body, config.max_message_bytes)
            request_type, method = signal
            try:
                if content_type == JSON:
                    request = parse_json(body, request_type)
                else:
                    request = parse_protobuf(body, request_type)
            except OtlpError as exc:
                raise _Refused(400, str(exc)) from None
            try:
                response = getattr(receiver, method)(request)
            except Overloaded as exc:
                raise _Refused(503, str(exc), exc.retry_after_s) from None
        if content_type == JSON:
            self._send(200, json_format.MessageToJson(response, indent=None).encode(), JSON)
        else:
            self._send(200, response.SerializeToString(), PROTOBUF)

    def _read(self, size: int) -> bytes:
        body = self.rfile.read(size)
        if len(body) != size:
            self.close_connection = True
            raise _Refused(400, f"body ended after {len(body)} of {size} bytes")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(100)
            try:
                n = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _Refused(400, "malformed chunked body") from None
            if n == 0:
                while self.rfile.readline(1000).strip():  # trailers
                    pass
                return b"".join(parts)
            total += n
            if total > limit:
                self.close_connection = True
                raise _Refused(413, f"body larger than {limit} bytes")
            parts.append(self._read(n))
            self.rfile.readline(3)  # CRLF after the chunk

    # -- GET ------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        receiver = self.server.receiver
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/metrics" and receiver.prometheus is not None:
            if not receiver.token_ok(self.headers.get("Authorization")):
                self._error(_Refused(401, "missing or wrong bearer token"), False)
                return
            self._send(200, receiver.prometheus.render().encode(), PROMETHEUS_CONTENT_TYPE)
        elif path in _SIGNALS:
            self._error(_Refused(405, "use POST"), False)
        else:
            self._error(_Refused(404, f"nothing at {path}"), False)

    do_HEAD = do_GET

    def _method_not_allowed(self) -> None:
        self.close_connection = True
        self._error(_Refused(405, f"method {self.command} not allowed"), False)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _Refused(400, f"malformed gzip body: {exc}") from None
    if len(out) > limit:
        raise _Refused(413, f"body larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise _Refused(400, "truncated gzip body")
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, receiver: Receiver, tls: ssl.SSLContext | None) -> None:
        self.receiver = receiver
        self.tls = tls
        self._slots = threading.BoundedSemaphore(receiver.config.max_connections)
        config = receiver.config
        if ":" in config.host:
            self.address_family = socket.AF_INET6
        super().__init__((config.host, config.http_port or 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):  # too many connections: 503, nothing read
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            # The handshake runs here, in the connection's thread, under the read timeout.
            request.settimeout(self.receiver.config.read_timeout_s)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                logger.debug("provtel serve: TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("provtel serve: connection from %s failed", client_address, exc_info=True)


def start_http_server(receiver: Receiver) -> tuple[ThreadingHTTPServer, int]:
    """Start the OTLP/HTTP server in a thread; return it and the port it listens on."""
    config = receiver.config
    tls = None
    if config.tls_cert is not None and config.tls_key is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(config.tls_cert, config.tls_key)
    server = _Server(receiver, tls)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="provtel-http", daemon=True
    )
    thread.start()
    return server, server.server_address[1]
