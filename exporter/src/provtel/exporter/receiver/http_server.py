"""OTLP/HTTP: ``POST /v1/traces`` and ``POST /v1/metrics``; also ``GET /metrics``, ``GET /healthz``.

HTTP/1.1 is parsed by Tornado's HTTP server (``tornado.httpserver`` / ``http1connection``), not
by provtel. Why Tornado: it is one well-kept dependency-free wheel (~0.5 MB, Apache-2.0, releases
through 2026) whose HTTP/1.1 connection has a header size limit, strict chunked parsing (hex
digits only: a chunk size of ``-1`` is a 400, not "read until EOF"), streaming body delivery
(so the body limit is ours, enforced as bytes arrive) and per-request header/body deadlines
(``header_timeout``, ``body_timeout``), on an event loop where an idle or slow connection costs
a socket, not a thread. The deadlines are enforced here by one periodic sweep with the same
semantics, because Tornado's two timers per request (``gen.with_timeout`` around the header
and the body reads) cost ~0.3 ms of CPU per request on this 2-core machine.
aiohttp would do too but brings seven dependencies and more C extensions; h11 only parses and
leaves the connection handling (the part that went wrong: deadlines, limits, slow clients) to
us. gRPC stays with grpcio.

Bodies are binary protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
optionally ``Content-Encoding: gzip`` (every member of a multi-member body is decoded; trailing
bytes that are not a gzip member are a 400), with a ``Content-Length`` or chunked. The response
has the request's content type. Decoding and journaling run on a small thread pool through
:class:`~provtel.exporter.receiver.decode.Ingest` (bounded memory); the event loop only moves
bytes.

Bounds, per connection and request:

* headers: at most ``max_header_bytes``, all received within ``header_timeout_s`` of the
  request's start (a per-request deadline, not per read: a client sending one byte every few
  seconds is cut off at the deadline); an idle keep-alive connection has the same deadline;
* body: at most ``max_message_bytes`` (compressed and decompressed), all received within
  ``body_timeout_s``; never buffered beyond the limit, whatever the framing says;
* connections: at most ``max_connections``; when full, a new connection first evicts the
  connection that has waited longest for its request headers (slow or idle clients cannot lock
  others out), and is answered 503 only when every connection is in the middle of a request.

Status codes (OTLP specification, "OTLP/HTTP Response"); error bodies are a
``google.rpc.Status``:

=========== =====================================================================================
200         accepted; ``partial_success`` says how many items were rejected and why
400         the body cannot be decoded (protobuf, JSON, hex ids, gzip), bad framing (Tornado's
            bare 400 for malformed HTTP, then the connection is closed)
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
reads the answer and the connection goes on; a larger body closes the connection after the
answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from tornado import httputil, iostream, netutil
from tornado.http1connection import HTTP1ServerConnection, is_transfer_encoding_chunked
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

from provtel.exporter.prov.otlp import OtlpError
from provtel.exporter.receiver.decode import Ingest
from provtel.exporter.receiver.limits import ServeLimits
from provtel.exporter.receiver.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from provtel.exporter.receiver.runs import Overloaded
from provtel.exporter.receiver.tls import server_context

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_SIGNALS = {"/v1/traces": "traces", "/v1/metrics": "metrics"}
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
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
# Tornado's own body limit is set out of reach: this module enforces max_message_bytes itself so
# that it can answer 413 with a google.rpc.Status (Tornado would answer a bare 400).
_UNBOUNDED = 1 << 62


class _Refused(Exception):
    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def gunzip(body: bytes, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several), at most ``limit`` bytes out;
    raises :class:`_Refused` 413 beyond it, 400 for a malformed or truncated member or for
    trailing bytes that are not a gzip member."""
    out: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise _Refused(400, f"malformed gzip body: {exc}") from None
        size += len(data)
        if size > limit:
            raise _Refused(413, f"body larger than {limit} bytes once decompressed")
        out.append(data)
        if not inflater.eof:
            raise _Refused(400, "truncated gzip body")
        rest = inflater.unused_data
        if not rest:
            return b"".join(out)
        if rest[:2] != b"\x1f\x8b":
            raise _Refused(400, f"{len(rest)} bytes of trailing data after the gzip body")


def _status_body(refused: _Refused, json_body: bool) -> tuple[bytes, str]:
    status = status_pb2.Status(
        code=_GRPC_CODES.get(refused.status, code_pb2.UNKNOWN), message=str(refused)
    )
    if json_body:
        return json_format.MessageToJson(status, indent=None).encode(), JSON
    return status.SerializeToString(), PROTOBUF


class _Request(httputil.HTTPMessageDelegate):
    """One HTTP request on a connection: checked at the headers, body collected within the
    limit (or dropped when refused), answered when complete."""

    def __init__(self, server: _Server, conn: Any, server_conn: HTTP1ServerConnection) -> None:
        self.server = server
        self.conn = conn
        self.server_conn = server_conn
        self.method = ""
        self.path = ""
        self.headers = httputil.HTTPHeaders()
        self.json_body = False
        self.chunked = False
        self.refused: _Refused | None = None
        self.parts: list[bytes] = []
        self.size = 0
        self.reserved = 0
        self.answered = False
        self.closing = False

    # -- headers --------------------------------------------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.server.request_started(self.server_conn, self.conn)
        self.method, self.headers = start_line.method, headers
        self.path = urlsplit(start_line.path).path
        self.conn.set_max_body_size(_UNBOUNDED)
        try:
            self.chunked = is_transfer_encoding_chunked(headers)
        except httputil.HTTPInputError:
            # Framing Tornado refuses itself right after this (a bare 400, then it closes):
            # nothing to add.
            self.answered = True
            return
        content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
        self.json_body = content_type == JSON
        if self.method != "POST":
            return  # answered in finish(); GET and HEAD have no body to speak of
        try:
            self._admit(content_type)
        except _Refused as refused:
            self.refused = refused
            declared = self._declared_length()
            limit = self.server.ingest.receiver.config.max_message_bytes
            if declared is not None and declared > limit:
                self._answer_refusal(close=True)  # not worth reading: answer now, then close

    def _declared_length(self) -> int | None:
        if self.chunked:
            return None
        length = self.headers.get("Content-Length")
        return int(length) if length is not None and length.isdigit() else None

    def _admit(self, content_type: str) -> None:
        receiver = self.server.ingest.receiver
        config = receiver.config
        if self.server.stopping:
            raise _Refused(503, "the receiver is stopping: retry later", config.retry_after_s)
        signal = _SIGNALS.get(self.path)
        if signal is None:
            raise _Refused(404, f"no OTLP endpoint at {self.path} (use /v1/traces or /v1/metrics)")
        if not receiver.token_ok(self.headers.get("Authorization")):
            raise _Refused(401, "missing or wrong bearer token")
        if content_type not in (PROTOBUF, JSON):
            raise _Refused(415, f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type!r}")
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise _Refused(415, f"Content-Encoding must be gzip or identity, not {encoding!r}")
        if self.chunked:
            size = config.max_message_bytes
        else:
            length = self.headers.get("Content-Length")
            if length is None:
                raise _Refused(411, "Content-Length required")
            if not length.isdigit():
                raise _Refused(400, f"bad Content-Length {length!r}")
            size = int(length)
            if size > config.max_message_bytes:
                raise _Refused(413, f"body of {size} bytes > {config.max_message_bytes}")
        if not receiver.budget.acquire(size):
            receiver.stats.refused_requests += 1
            raise _Refused(503, "receiver busy: retry later", config.retry_after_s)
        self.reserved = size

    # -- body -----------------------------------------------------------------------------------

    def data_received(self, chunk: bytes) -> None:
        if self.answered:
            return
        limit = self.server.ingest.receiver.config.max_message_bytes
        self.size += len(chunk)
        if self.size > limit:
            if self.refused is None or self.refused.status != 413:
                self.refused = _Refused(413, f"body larger than {limit} bytes")
            self._answer_refusal(close=True)
            return
        if self.refused is None and self.method == "POST":
            self.parts.append(chunk)

    def finish(self) -> None:
        self.server.body_done(self.conn)
        if self.answered:
            return
        if self.method in ("GET", "HEAD"):
            self._get()
        elif self.method != "POST":
            self.refused = _Refused(405, f"method {self.method} not allowed")
            self._answer_refusal(close=True)
        elif self.refused is not None:
            self._answer_refusal(close=False)
        else:
            body, self.parts = b"".join(self.parts), []
            self._post(body)

    def on_connection_close(self) -> None:
        self.server.body_done(self.conn)
        self._release()

    def _release(self) -> None:
        if self.reserved:
            self.server.ingest.receiver.budget.release(self.reserved)
            self.reserved = 0

    # -- answers --------------------------------------------------------------------------------

    def _post(self, body: bytes) -> None:
        """Gunzip, then decode and journal: a small body on the loop thread (a few ms, cheaper
        than two thread hand-offs, which cost more CPU than the work on 2 cores), a large one
        on a worker thread so that the loop keeps serving the other connections."""
        if self.headers.get("Content-Encoding", "identity").strip().lower() == "gzip":
            try:
                body = gunzip(body, self.server.ingest.receiver.config.max_message_bytes)
            except _Refused as refused:
                self._answered_post(None, refused)
                return
        if len(body) <= self.server.limits.http_inline_bytes:
            try:
                response = self._decode(body)
            except Exception as exc:
                self._answered_post(None, exc)
            else:
                self._answered_post(response, None)
        else:
            self.server.spawn(self._post_on_worker(body))

    async def _post_on_worker(self, body: bytes) -> None:
        try:
            response = await self.server.run(self._decode, body)
        except Exception as exc:
            self._answered_post(None, exc)
        else:
            self._answered_post(response, None)

    def _decode(self, body: bytes) -> Any:
        try:
            return self.server.ingest.export(_SIGNALS[self.path], body, self.json_body)
        except OtlpError as exc:
            raise _Refused(400, str(exc)) from None
        except Overloaded as exc:
            raise _Refused(503, str(exc), exc.retry_after_s) from None

    def _answered_post(self, response: Any, error: Exception | None) -> None:
        self._release()
        if isinstance(error, _Refused):
            self.refused = error
            self._answer_refusal(close=False)
        elif error is not None:
            logger.error("provtel serve: cannot handle an HTTP export", exc_info=error)
            self.refused = _Refused(500, "internal error; see the receiver's log")
            self._answer_refusal(close=True)
        elif self.json_body:
            self._send(200, json_format.MessageToJson(response, indent=None).encode(), JSON)
        else:
            self._send(200, response.SerializeToString(), PROTOBUF)

    def _get(self) -> None:
        receiver = self.server.ingest.receiver
        if self.path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif self.path == "/metrics" and receiver.prometheus is not None:
            if not receiver.token_ok(self.headers.get("Authorization")):
                self.refused = _Refused(401, "missing or wrong bearer token")
                self._answer_refusal(close=False)
                return
            self.server.spawn(self._metrics())
        elif self.path in _SIGNALS:
            self.refused = _Refused(405, "use POST")
            self._answer_refusal(close=False)
        else:
            self.refused = _Refused(404, f"nothing at {self.path}")
            self._answer_refusal(close=False)

    async def _metrics(self) -> None:
        prometheus = self.server.ingest.receiver.prometheus
        assert prometheus is not None
        page = await self.server.run(lambda: prometheus.render().encode())
        self._send(200, page, PROMETHEUS_CONTENT_TYPE)

    def _answer_refusal(self, close: bool) -> None:
        self._release()
        refused = self.refused
        assert refused is not None
        body, content_type = _status_body(refused, self.json_body)
        headers = {}
        if refused.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(refused.retry_after_s)))
        if refused.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="provtel"'
        self._send(refused.status, body, content_type, headers, close)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        if self.answered:
            return
        self.answered = True
        out = httputil.HTTPHeaders(
            {
                "Content-Type": content_type,
                "Content-Length": str(len(body)),
                "Server": "provtel-serve",
            }
        )
        for key, value in (headers or {}).items():
            out[key] = value
        if close:
            out["Connection"] = "close"
        start = httputil.ResponseStartLine("HTTP/1.1", status, httputil.responses.get(status, ""))
        try:
            self.conn.write_headers(start, out, body if self.method != "HEAD" else b"")
            self.conn.finish()
        except (iostream.StreamClosedError, httputil.HTTPOutputError):
            pass  # the client went away


def _no_callback(request: Any) -> None:
    raise AssertionError("unused: _Server.start_request makes the request delegates")


class _Server(HTTPServer):
    """Tornado's HTTP server with provtel's requests, connection limit and eviction."""

    ingest: Ingest
    limits: ServeLimits
    stopping: bool
    pool: ThreadPoolExecutor
    _waiting: dict[HTTP1ServerConnection, float]

    def setup(self, ingest: Ingest, limits: ServeLimits) -> None:
        self.ingest, self.limits, self.stopping = ingest, limits, False
        self.pool = ThreadPoolExecutor(limits.http_workers, thread_name_prefix="provtel-http")
        self._waiting = {}  # connections waiting for request headers -> since when
        self._reading: dict[Any, float] = {}  # requests receiving their body -> deadline
        self._tasks: set[asyncio.Future[Any]] = set()
        self.body_timeout_s = limits.body_timeout_s or ingest.receiver.config.read_timeout_s
        # Deadlines are enforced by one sweep rather than a timer per request (Tornado's
        # gen.with_timeout per header and body read cost ~0.3 ms of CPU per request here).
        interval = min(limits.header_timeout_s, self.body_timeout_s) / 4
        self._sweeper = PeriodicCallback(self._sweep, 1000 * max(0.05, min(1.0, interval)))
        self._sweeper.start()

    def _sweep(self) -> None:
        """Close connections past their header deadline and requests past their body one."""
        now = time.monotonic()
        late = now - self.limits.header_timeout_s
        for server_conn, since in list(self._waiting.items()):
            if since < late:
                del self._waiting[server_conn]
                logger.debug("provtel serve: closed a connection past its header deadline")
                server_conn.stream.close()
        for request_conn, deadline in list(self._reading.items()):
            if deadline < now:
                del self._reading[request_conn]
                logger.debug("provtel serve: closed a connection past its body deadline")
                if request_conn.stream is not None:
                    request_conn.stream.close()

    def stop_sweeping(self) -> None:
        """Stop the deadline sweep (at shutdown)."""
        self._sweeper.stop()

    # -- connections ----------------------------------------------------------------------------

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        full = len(self._connections) >= self.ingest.receiver.config.max_connections
        if full and not self._evict_waiting():
            self.ingest.receiver.stats.refused_requests += 1
            future = stream.write(_BUSY)
            future.add_done_callback(lambda _: stream.close())
            return
        super().handle_stream(stream, address)

    def _evict_waiting(self) -> bool:
        """Close the connection that has waited longest for request headers (slowloris, idle
        keep-alive); False when every connection is in the middle of a request."""
        if not self._waiting:
            return False
        oldest = min(self._waiting, key=self._waiting.__getitem__)
        del self._waiting[oldest]
        self._connections.discard(oldest)
        logger.debug("provtel serve: connections full; closed one waiting for headers")
        oldest.stream.close()
        return True

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Any:
        assert isinstance(server_conn, HTTP1ServerConnection)
        self._waiting[server_conn] = time.monotonic()
        return _Request(self, request_conn, server_conn)

    def request_started(self, server_conn: HTTP1ServerConnection, request_conn: Any) -> None:
        """The headers of a request are in: its connection is no longer evictable, and its
        body deadline starts."""
        self._waiting.pop(server_conn, None)
        self._reading[request_conn] = time.monotonic() + self.body_timeout_s

    def body_done(self, request_conn: Any) -> None:
        """A request's body is in (or its connection closed)."""
        self._reading.pop(request_conn, None)

    def on_close(self, server_conn: object) -> None:
        assert isinstance(server_conn, HTTP1ServerConnection)
        self._waiting.pop(server_conn, None)
        self._connections.discard(server_conn)

    # -- work -----------------------------------------------------------------------------------

    def spawn(self, coroutine: Any) -> None:
        """Run a request's answer on the loop (kept referenced until done)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    @property
    def busy(self) -> bool:
        """Whether requests are being decoded or answered."""
        return bool(self._tasks)


class HttpServer:
    """The OTLP/HTTP server, on its own event-loop thread: ``port``, ``stop()``."""

    def __init__(self, ingest: Ingest, limits: ServeLimits | None = None) -> None:
        self.ingest = ingest
        self.limits = limits or ServeLimits()
        config = ingest.receiver.config
        tls = server_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        # Bound here, in the caller's thread, so that "address in use" is the caller's error.
        self._sockets = netutil.bind_sockets(
            config.http_port or 0, config.host, family=family, backlog=128
        )
        self.port = int(self._sockets[0].getsockname()[1])
        self._tls = tls
        self._ready = threading.Event()
        self._loop: IOLoop | None = None
        self._server: _Server | None = None
        self._thread = threading.Thread(target=self._serve, name="provtel-http", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._server is None:
            raise OSError(f"cannot serve OTLP/HTTP on {config.host}:{self.port}; see the log")

    def _serve(self) -> None:
        try:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = IOLoop.current()
            self._server = self._listen()
        finally:
            self._ready.set()
        self._loop.start()
        self._loop.close(all_fds=True)

    def _listen(self) -> _Server:
        config = self.ingest.receiver.config
        server = _Server(
            _no_callback,
            ssl_options=self._tls,
            idle_connection_timeout=self.limits.header_timeout_s,
            body_timeout=self.limits.body_timeout_s or config.read_timeout_s,
            max_header_size=self.limits.max_header_bytes,
            max_body_size=_UNBOUNDED,
            decompress_request=False,
            chunk_size=64 * 1024,
        )
        # Tornado's own per-request timers are replaced by _Server's sweep (same deadlines).
        server.conn_params.header_timeout = None
        server.conn_params.body_timeout = None
        server.setup(self.ingest, self.limits)
        server.add_sockets(self._sockets)
        return server

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, answer 503 to new requests, let those in progress finish (up to
        ``grace_s``), close every connection and the loop."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return
        done = threading.Event()

        async def shut() -> None:
            server.stop()
            server.stop_sweeping()
            server.stopping = True
            deadline = time.monotonic() + grace_s
            while server.busy and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(server.close_all_connections(), timeout=1.0)
            server.pool.shutdown(wait=False, cancel_futures=True)
            done.set()

        loop.add_callback(lambda: asyncio.ensure_future(shut()))
        done.wait(grace_s + 5)
        loop.add_callback(loop.stop)
        self._thread.join(5)
        self._loop = None


def start_http_server(ingest: Ingest, limits: ServeLimits | None = None) -> HttpServer:
    """Start the OTLP/HTTP server in a thread (the port is ``.port``)."""
    return HttpServer(ingest, limits)


__all__ = ["HttpServer", "gunzip", "start_http_server"]
