"""``provtel serve``'s HTTP side against hostile or broken clients (issue 12, items 3, 4, 9, 10).

Each test is a reproduction from the issue, scaled down to loopback, a few connections and
short deadlines: raw sockets write exactly the bytes an attacker would.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.receiver import ReceiverConfig, ReceiverServer
from provtel.exporter.receiver.tls import TlsError
from tests.receiver.helpers import (
    PROTOBUF,
    documents,
    post,
    resource,
    trace_request,
    training_spans,
    wait_for,
)

Serve = Callable[..., ReceiverServer]

GOOD = trace_request(training_spans(resource(), trace_id=0xABC)).SerializeToString()


def _connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _head(path: str = "/v1/traces", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {PROTOBUF}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket times out)."""
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return out
        if not data:
            return out
        out += data


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer.split(b" ", 2)[1])


def _still_serves(server: ReceiverServer) -> None:
    assert post(server.http_port, "/v1/traces", GOOD)[0] == 200


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


# -- 3: a negative chunk size -------------------------------------------------------------------


def test_a_negative_chunk_size_is_a_400_not_a_read_to_eof(serve: Serve) -> None:
    server = serve(max_message_bytes=65_536)
    with _connect(server.http_port) as sock:
        sock.sendall(_head(Transfer_Encoding="chunked") + b"-1\r\n" + b"\x00" * 200_000)
        # The connection stays open on our side: a server reading "until EOF" never answers.
        answer = _read_answer(sock)
    assert _status(answer) == 400
    wait_for(lambda: server.receiver.budget.used == 0, what="the reservation given back")
    _still_serves(server)


def test_chunked_bodies_past_the_limit_are_cut_off_without_reading_on(serve: Serve) -> None:
    server = serve(max_message_bytes=65_536)
    with _connect(server.http_port) as sock:
        sock.sendall(_head(Transfer_Encoding="chunked"))
        sent = 0
        chunk = b"1000\r\n" + b"\x00" * 0x1000 + b"\r\n"
        with pytest.raises(OSError):  # the server closes once past the limit: a reset or EPIPE
            while sent < 64 * 1024 * 1024:  # 64 MiB; the old server read it all
                sock.sendall(chunk)
                sent += len(chunk)
    assert sent < 16 * 1024 * 1024
    _still_serves(server)


# -- 4: slowloris -------------------------------------------------------------------------------


def test_the_header_deadline_is_per_request_not_per_read(serve: Serve) -> None:
    server = serve(header_timeout_s=0.5)
    with _connect(server.http_port, timeout=0.2) as sock:
        header = _head() + b"X-Pad: " + b"a" * 200
        for sent in range(len(header)):  # one byte every 0.2 s: each read well in time
            try:
                sock.sendall(header[sent : sent + 1])
            except OSError:
                break
            if _closed_by_server(sock):
                break
        else:
            pytest.fail("a client trickling its headers for 40 s was never cut off")
    assert sent < len(header)
    _still_serves(server)


def test_the_body_deadline_is_per_request_not_per_read(serve: Serve) -> None:
    server = serve(body_timeout_s=0.5)
    with _connect(server.http_port, timeout=0.2) as sock:
        sock.sendall(_head(Content_Length="300"))
        for _ in range(300):  # one body byte every 0.2 s: each read well in time
            try:
                sock.sendall(b"\x00")
            except OSError:
                break
            if _closed_by_server(sock):
                break
        else:
            pytest.fail("a client trickling its body for 60 s was never cut off")
    wait_for(lambda: server.receiver.budget.used == 0, what="the reservation given back")
    _still_serves(server)


def test_slow_clients_cannot_lock_others_out(serve: Serve) -> None:
    # Scaled down from 130 connections sending one header byte every 10 s: the connections
    # are full of clients that have not finished their headers.
    server = serve(max_connections=4, header_timeout_s=30.0)
    slow = [_connect(server.http_port) for _ in range(6)]
    try:
        for sock in slow:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        wait_for(lambda: _connections(server) >= 4, what="slow connections taken")
        for _ in range(3):
            # 200, not 503 — allowing the retries an OTLP exporter makes: under a loaded
            # machine (the suite runs two workers) one 503 was seen once; never a lock-out.
            statuses = [post(server.http_port, "/v1/traces", GOOD)[0] for _ in range(1)]
            while statuses[-1] == 503 and len(statuses) < 3:
                time.sleep(0.2)
                statuses.append(post(server.http_port, "/v1/traces", GOOD)[0])
            assert statuses[-1] == 200, statuses
    finally:
        for sock in slow:
            sock.close()


def test_connections_busy_with_requests_get_503_beyond_the_limit(serve: Serve) -> None:
    server = serve(max_connections=1)
    busy = _connect(server.http_port)
    try:
        busy.sendall(_head(Content_Length=str(len(GOOD))) + GOOD[:10])  # mid-body
        wait_for(lambda: _connections(server) == 1, what="slot taken")
        time.sleep(0.1)  # let the server read the headers
        status, headers, _ = post(server.http_port, "/v1/traces", b"")
        assert status == 503 and headers["retry-after"] == "1"
        busy.sendall(GOOD[10:])
        assert _status(busy.recv(65536)) == 200
    finally:
        busy.close()


def _connections(server: ReceiverServer) -> int:
    http = server._http
    assert http is not None and http._server is not None
    return len(http._server._connections)


# -- 9: multi-member gzip -----------------------------------------------------------------------


def test_every_gzip_member_is_decoded(serve: Serve) -> None:
    server = serve()
    first = training_spans(resource(), trace_id=0x91)
    second = training_spans(resource(), trace_id=0x91, seed=7)
    body = gzip.compress(trace_request(first).SerializeToString()) + gzip.compress(
        trace_request(second).SerializeToString()
    )
    status, _, _ = post(server.http_port, "/v1/traces", body, headers={"Content-Encoding": "gzip"})
    assert status == 200
    (doc_path,) = wait_for(lambda: documents(server.output_dir), what="the document")
    doc = assert_valid(doc_path, round_trips=False)
    got = {a["otel:span_id"] for a in doc["activity"].values() if "otel:span_id" in a}
    assert got == {f"{s.context.span_id:016x}" for s in first + second}


@pytest.mark.parametrize("trailer", [b"garbage", b"\x00" * 8, b"\x1f\x8b\x08trunc"])
def test_bytes_after_the_gzip_body_are_a_400(serve: Serve, trailer: bytes) -> None:
    server = serve()
    body = gzip.compress(GOOD) + trailer
    status, _, _ = post(server.http_port, "/v1/traces", body, headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert server.receiver.router.runs == []  # nothing of it was kept


# -- 10: serve's own errors ---------------------------------------------------------------------


def _serve_cli(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "serve", "--output", str(tmp_path / "o"),
         "--grpc-port", "0", "--http-port", "0", *map(str, args)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal: a pass-phrase prompt cannot block
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )  # fmt: skip


def _one_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p, ("no such file",)),
        (lambda p: (p.mkdir(), p)[1], ("directory",)),
        (lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), p)[1], ("not text",)),
        (lambda p: (p.write_text("  \n"), p)[1], ("empty",)),
    ],
    ids=["missing", "directory", "binary", "empty"],
)
def test_a_bad_token_file_is_one_clear_error(tmp_path: Path, make: Any, words: Any) -> None:
    token_file = make(tmp_path / "token")
    line = _one_clear_error(_serve_cli(tmp_path, "--token-file", token_file), *words)
    assert str(token_file) in line


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_a_bad_tls_key_is_not_reported_as_failed_to_bind(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    line = _one_clear_error(_serve_cli(tmp_path, "--tls-cert", cert, "--tls-key", bad), "key")
    assert "bind" not in line.lower() and str(bad) in line


def test_an_encrypted_key_is_an_error_never_a_pass_phrase_prompt(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    encrypted = tmp_path / "encrypted.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-out", str(encrypted), "-aes256",
         "-passout", "pass:secret"],
        check=True, capture_output=True,
    )  # fmt: skip
    result = _serve_cli(tmp_path, "--tls-cert", cert, "--tls-key", encrypted)
    line = _one_clear_error(result, "encrypted", str(encrypted))
    assert "pass phrase:" not in result.stderr.lower() + result.stdout.lower(), line
    # The same from the API: an exception, not a prompt.
    with pytest.raises(TlsError, match="encrypted"):
        ReceiverServer(ReceiverConfig(output_dir=tmp_path / "o", tls_cert=cert, tls_key=encrypted))


def test_a_missing_tls_file_is_one_clear_error(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    gone = tmp_path / "gone.pem"
    _one_clear_error(_serve_cli(tmp_path, "--tls-cert", cert, "--tls-key", gone), "no such file")


def test_refusals_answer_with_json_status_when_asked_in_json(serve: Serve) -> None:
    server = serve(token="t")
    status, headers, body = post(server.http_port, "/v1/traces", b"{}", "application/json")
    assert status == 401 and headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == 16  # UNAUTHENTICATED


# -- 5: memory bounded in bytes -----------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024


def test_a_request_of_empty_spans_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    # The request was 2M empty spans in 4 MB (RSS 55 -> 392 MB): decoded whole, each
    # 2-byte span is ~170 bytes. Scaled to 600k spans (1.2 MB; ~100 MB decoded whole) and
    # 32 KiB decode chunks: the receiver holds the body, its chunks and one chunk decoded.
    from tests.receiver.helpers import ServeProcess

    n = 600_000
    body = _field(1, _field(2, b"\x12\x00" * n))  # resource_spans { scope_spans { spans x n } }
    server = ServeProcess(tmp_path / "out", "--decode-chunk-kib", "32")
    try:
        _still_serves_port(server.http_port)
        before = _peak_rss_mib(server.proc.pid)
        status, _, reply = post(server.http_port, "/v1/traces", body)
        peak = _peak_rss_mib(server.proc.pid)
    finally:
        server.stop()
    assert status == 200
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    assert ExportTraceServiceResponse.FromString(reply).partial_success.rejected_spans == n
    # body + chunk copies (~2.4 MB), one 32 KiB chunk decoded (~3 MB), the reply: far below
    # the ~100 MB of decoding it whole.
    assert peak - before < 40, (before, peak)


def _still_serves_port(port: int) -> None:
    assert post(port, "/v1/traces", GOOD)[0] == 200


def test_metrics_series_are_bounded_in_bytes(serve: Serve) -> None:
    from tests.receiver.helpers import get, metrics_request

    server = serve(max_series_bytes=256 * 1024)
    for i in range(20):  # 20 resources with 100 KB attributes each: 2 MB of labels
        res = resource(rank=i, big="x" * 100_000)
        body = metrics_request(res).SerializeToString()
        assert post(server.http_port, "/v1/metrics", body)[0] == 200
    status, page = get(server.http_port, "/metrics")
    assert status == 200
    assert len(page) <= 256 * 1024
    assert b"ml_steps_total{" in page  # what fits is still exposed
    prometheus = server.receiver.prometheus
    assert prometheus is not None and prometheus.used_bytes <= 256 * 1024


# -- fuzzing: hostile framing -------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ_LIMIT = 16_384
_ALLOWED = {200, 400, 401, 404, 405, 411, 413, 415, 431, 503}
_sizes = st.one_of(
    st.integers(-5, FUZZ_LIMIT * 4).map(str),
    st.sampled_from(["-1", "+5", "0x10", "", " 12", "1e3", "99999999999999999999", "5, 6"]),
    st.text("0123456789abcdefABCDEF-+ ;x", max_size=12),
)
_body = st.binary(max_size=2_000) | st.just(GOOD)


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    framing = draw(st.sampled_from(["length", "chunked", "both", "none", "garbage"]))
    headers = [f"Content-Type: {draw(st.sampled_from([PROTOBUF, 'application/json', 'x']))}"]
    if draw(st.booleans()):
        headers.append("X-Big: " + "h" * draw(st.integers(0, 100_000)))
    body = draw(_body)
    if framing in ("length", "both"):
        headers.append(f"Content-Length: {draw(_sizes | st.just(str(len(body))))}")
    if framing in ("chunked", "both"):
        headers.append("Transfer-Encoding: " + draw(st.sampled_from(["chunked", "chunked, gzip"])))
        pieces = draw(st.lists(st.tuples(_sizes, st.binary(max_size=300)), max_size=4))
        body = b"".join(f"{size}\r\n".encode() + data + b"\r\n" for size, data in pieces)
        if draw(st.booleans()):
            body += b"0\r\n\r\n"
    if framing == "garbage":
        return draw(st.binary(max_size=3_000))
    head = "POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    data = head.encode() + body
    cut = draw(st.integers(0, len(data)))  # truncated anywhere
    return data[: cut if draw(st.booleans()) else len(data)]


@pytest.fixture(scope="module")
def framing_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from provtel.exporter.receiver.limits import ServeLimits

    server = ReceiverServer(
        ReceiverConfig(
            output_dir=tmp_path_factory.mktemp("framing") / "out",
            grpc_port=None,
            http_port=0,
            grace_s=3600,
            max_message_bytes=FUZZ_LIMIT,
            max_inflight_bytes=FUZZ_LIMIT * 4,
            max_connections=8,
            read_timeout_s=1.0,
        ),
        ServeLimits(header_timeout_s=1.0, max_header_bytes=16_384),
    )
    server.start()
    yield server
    server.stop(grace_s=1.0)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_hostile())
def test_hostile_framing_never_takes_the_server_down(
    framing_server: ReceiverServer, data: bytes
) -> None:
    server = framing_server
    with _connect(server.http_port, timeout=5.0) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # then EOF: whatever framing said
        except OSError:
            pass  # the server already answered and closed
        answer = _read_answer(sock)
    for status_line in answer.split(b"HTTP/1.1 ")[1:]:
        assert int(status_line[:3]) in _ALLOWED, answer[:200]
    # Still up, the next good request is served, and nothing stays reserved.
    _still_serves(server)
    wait_for(lambda: server.receiver.budget.used == 0, timeout=10, what="reservations back")
