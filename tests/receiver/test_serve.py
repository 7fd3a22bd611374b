"""``provtel serve`` over the wire: OTLP status codes, partial success, bounds, auth, TLS, fuzz."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource

from provtel.exporter.prov.otlp import to_json
from provtel.exporter.prov.validate import assert_valid, check_file
from provtel.exporter.receiver import ReceiverServer
from tests.receiver.helpers import (
    JSON,
    METRICS,
    PROTOBUF,
    TRACES,
    documents,
    get,
    grpc_channel,
    grpc_export,
    gzipped,
    metrics_request,
    post,
    resource,
    trace_request,
    training_spans,
    wait_for,
)

Serve = Callable[..., ReceiverServer]


def span_ids(doc: dict[str, Any]) -> set[str]:
    return {a["otel:span_id"] for a in doc["activity"].values() if "otel:span_id" in a}


def finished(server: ReceiverServer, n: int) -> list[Path]:
    """Wait for ``n`` finalised documents."""

    def done() -> list[Path] | None:
        docs = documents(server.output_dir)
        return docs if len(docs) >= n else None

    return wait_for(done, what=f"{n} document(s)")


def test_protobuf_json_gzip_and_grpc_are_acknowledged(serve: Serve) -> None:
    server = serve()
    sent = {}
    for n, (how, content_type) in enumerate(
        [("protobuf", PROTOBUF), ("json", JSON), ("gzip", PROTOBUF), ("grpc", "")], start=1
    ):
        spans = training_spans(resource(), trace_id=n)
        sent[f"{n:032x}"] = {f"{s.context.span_id:016x}" for s in spans}
        request = trace_request(spans)
        if how == "grpc":
            with grpc_channel(server.grpc_port) as channel:
                reply = grpc_export(channel, TRACES, request.SerializeToString())
            assert ExportTraceServiceResponse.FromString(reply) == ExportTraceServiceResponse()
            continue
        body = to_json(request).encode() if how == "json" else request.SerializeToString()
        headers = {"Content-Encoding": "gzip"} if how == "gzip" else {}
        status, reply_headers, reply = post(
            server.http_port,
            "/v1/traces",
            gzipped(body) if how == "gzip" else body,
            content_type,
            headers,
        )
        assert status == 200, reply
        assert reply_headers["content-type"] == content_type
        if how == "json":
            assert json.loads(reply) == {}
        else:
            assert ExportTraceServiceResponse.FromString(reply) == ExportTraceServiceResponse()
    for doc_path in finished(server, 4):
        doc = assert_valid(doc_path, round_trips=False)
        (trace,) = {a["otel:trace_id"] for a in doc["activity"].values() if "otel:trace_id" in a}
        assert span_ids(doc) == sent[trace]


def test_rejected_spans_and_points_come_back_as_partial_success(serve: Serve) -> None:
    server = serve()
    request = trace_request(training_spans(resource()))
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(request.resource_spans[0].scope_spans[0].spans[0])
    bad.trace_id = bytes(16)
    status, _, reply = post(server.http_port, "/v1/traces", request.SerializeToString())
    assert status == 200
    partial = ExportTraceServiceResponse.FromString(reply).partial_success
    assert partial.rejected_spans == 1 and "trace_id" in partial.error_message

    metrics = metrics_request(resource())
    summary = metrics.resource_metrics[0].scope_metrics[0].metrics.add(name="latency")
    summary.summary.data_points.add(count=1, sum=1.0)
    with grpc_channel(server.grpc_port) as channel:
        reply = grpc_export(channel, METRICS, metrics.SerializeToString())
    partial_m = ExportMetricsServiceResponse.FromString(reply).partial_success
    assert partial_m.rejected_data_points == 1 and "summary" in partial_m.error_message

    status, _, reply = post(server.http_port, "/v1/traces", to_json(request).encode(), JSON)
    assert json.loads(reply)["partialSuccess"]["rejectedSpans"] == "1"


def _status(body: bytes, content_type: str = PROTOBUF) -> status_pb2.Status:
    if content_type == JSON:
        from google.protobuf import json_format

        return json_format.Parse(body, status_pb2.Status())
    return status_pb2.Status.FromString(body)


INVALID, TOO_LARGE = code_pb2.INVALID_ARGUMENT, code_pb2.RESOURCE_EXHAUSTED
GZIP = {"Content-Encoding": "gzip"}
BASE64_IDS = (
    b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}'
)
HTTP_REFUSALS = [
    # (what, path, body, content type, headers, status, google.rpc code)
    ("malformed protobuf", "/v1/traces", b"\x0a\xff\xff", PROTOBUF, {}, 400, INVALID),
    ("malformed JSON", "/v1/metrics", b'{"resourceMetrics": [', JSON, {}, 400, INVALID),
    ("base64 ids in JSON", "/v1/traces", BASE64_IDS, JSON, {}, 400, INVALID),
    ("wrong content type", "/v1/traces", b"{}", "text/plain", {}, 415, INVALID),
    ("unknown encoding", "/v1/traces", b"", PROTOBUF, {"Content-Encoding": "br"}, 415, INVALID),
    ("bad gzip", "/v1/traces", b"not gzip", PROTOBUF, GZIP, 400, INVALID),
    ("too large", "/v1/traces", b"\x00" * 70_000, PROTOBUF, {}, 413, TOO_LARGE),
    ("gzip bomb", "/v1/traces", gzipped(b"\x00" * 10_000_000), PROTOBUF, GZIP, 413, TOO_LARGE),
    ("no such path", "/v1/logs", b"", PROTOBUF, {}, 404, code_pb2.NOT_FOUND),
]


@pytest.mark.parametrize(
    ("path", "body", "content_type", "headers", "status", "code"),
    [case[1:] for case in HTTP_REFUSALS],
    ids=[case[0] for case in HTTP_REFUSALS],
)
def test_bad_http_requests_get_the_otlp_error(
    serve: Serve,
    path: str,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    code: int,
) -> None:
    server = serve(max_message_bytes=65_536)
    got, reply_headers, reply = post(server.http_port, path, body, content_type, headers)
    assert got == status
    body_type = JSON if content_type == JSON else PROTOBUF
    assert reply_headers["content-type"] == body_type
    assert _status(reply, body_type).code == code
    # The server is still up and takes the next valid request.
    good = trace_request(training_spans(resource()))
    assert post(server.http_port, "/v1/traces", good.SerializeToString())[0] == 200


def test_chunked_bodies_are_read_and_bounded(serve: Serve) -> None:
    import http.client

    server = serve(max_message_bytes=65_536)
    body = trace_request(training_spans(resource())).SerializeToString()

    def chunked(data: bytes) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        conn.request(
            "POST",
            "/v1/traces",
            body=iter([data[: len(data) // 2], data[len(data) // 2 :]]),
            headers={"Content-Type": PROTOBUF, "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        status = conn.getresponse().status
        conn.close()
        return status

    assert chunked(body) == 200
    assert chunked(b"\x00" * 100_000) == 413


def test_bad_grpc_requests_get_the_otlp_error(serve: Serve) -> None:
    server = serve(max_message_bytes=65_536)
    with grpc_channel(server.grpc_port) as channel:
        for body, code in [
            (b"\x0a\xff\xff", grpc.StatusCode.INVALID_ARGUMENT),
            (b"\x00" * 70_000, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ]:
            with pytest.raises(grpc.RpcError) as error:
                grpc_export(channel, TRACES, body)
            assert error.value.code() == code
        with pytest.raises(grpc.RpcError) as error:
            grpc_export(channel, "/opentelemetry.proto.collector.logs.v1.LogsService/Export", b"")
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        good = trace_request(training_spans(resource()))
        grpc_export(channel, TRACES, good.SerializeToString())  # still up
    (doc,) = finished(server, 1)
    assert_valid(doc, round_trips=False)


def test_a_token_is_required_when_configured(serve: Serve) -> None:
    server = serve(token="s3cret")
    body = trace_request(training_spans(resource())).SerializeToString()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        status, reply_headers, reply = post(server.http_port, "/v1/traces", body, headers=headers)
        assert status == 401
        assert reply_headers["www-authenticate"].startswith("Bearer")
        assert _status(reply).code == code_pb2.UNAUTHENTICATED
    assert get(server.http_port, "/metrics")[0] == 401
    with grpc_channel(server.grpc_port) as channel:
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as error:
                grpc_export(channel, TRACES, body, metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        grpc_export(channel, TRACES, body, (("authorization", "Bearer s3cret"),))
    assert (
        post(server.http_port, "/v1/traces", body, headers={"Authorization": "Bearer s3cret"})[0]
        == 200
    )
    assert len(finished(server, 1)) == 1  # both deliveries of the same spans: one run


def test_overload_is_retry_later_and_loses_nothing(serve: Serve) -> None:
    server = serve(max_message_bytes=1_000_000, max_inflight_bytes=1_000_000)
    budget = server.receiver.budget
    body = trace_request(training_spans(resource())).SerializeToString()
    assert budget.acquire(budget.limit)  # as if other requests were being journaled
    try:
        status, headers, reply = post(server.http_port, "/v1/traces", body)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert _status(reply).code == code_pb2.UNAVAILABLE
        with grpc_channel(server.grpc_port) as channel:
            with pytest.raises(grpc.RpcError) as error:
                grpc_export(channel, TRACES, body)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(error.value.trailing_metadata())
        info = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert info.retry_delay.seconds == 1
        details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert details.code == code_pb2.RESOURCE_EXHAUSTED and details.details[0].Is(
            RetryInfo.DESCRIPTOR
        )
        assert server.receiver.router.runs == []  # nothing was taken
    finally:
        budget.release(budget.limit)
    assert post(server.http_port, "/v1/traces", body)[0] == 200  # the retry succeeds


def test_real_exporters_over_tls_with_a_token(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these override the exporter's certificate_file (requests' own behaviour).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = serve(token="tok", tls_cert=cert, tls_key=key)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
    from opentelemetry.sdk.trace.export import SpanExportResult

    spans = training_spans(resource())
    grpc_exporter = Grpc(
        endpoint=f"https://localhost:{server.grpc_port}",
        credentials=grpc.ssl_channel_credentials(cert.read_bytes()),
        headers={"authorization": "Bearer tok"},
    )
    http_exporter = Http(
        endpoint=f"https://localhost:{server.http_port}/v1/traces",
        certificate_file=str(cert),
        headers={"Authorization": "Bearer tok"},
    )
    wrong = Http(
        endpoint=f"https://localhost:{server.http_port}/v1/traces",
        certificate_file=str(cert),
        headers={"Authorization": "Bearer nope"},
    )
    try:
        assert grpc_exporter.export(spans) == SpanExportResult.SUCCESS
        assert http_exporter.export(spans) == SpanExportResult.SUCCESS
        assert wrong.export(spans) == SpanExportResult.FAILURE
    finally:
        for exporter in (grpc_exporter, http_exporter, wrong):
            exporter.shutdown()
    (doc,) = finished(server, 1)
    assert span_ids(assert_valid(doc, round_trips=False)) == {
        f"{s.context.span_id:016x}" for s in spans
    }


def test_metrics_endpoint_speaks_prometheus(serve: Serve, tmp_path: Path) -> None:
    server = serve()
    body = metrics_request(resource(rank=0), steps=4, loss=0.5).SerializeToString()
    assert post(server.http_port, "/v1/metrics", body)[0] == 200
    status, text = get(server.http_port, "/metrics")
    assert status == 200
    exposition = text.decode()
    lines = exposition.splitlines()
    assert "# TYPE ml_steps_total counter" in lines
    assert any(
        line.startswith("ml_steps_total{")
        and 'ml_context="training"' in line
        and 'job="train"' in line
        and 'instance="instance-0"' in line
        and line.endswith(" 4")
        for line in lines
    )
    assert any(line.startswith("ml_loss_ratio{") and line.endswith(" 0.5") for line in lines)
    assert any(line.startswith("ml_step_duration_seconds_bucket{") for line in lines)
    assert any(line.startswith("target_info{") and 'ml_rank="0"' in line for line in lines)
    promtool = shutil.which("promtool")
    if promtool is not None:  # Prometheus' own linter parses the exposition
        check = subprocess.run(
            [promtool, "check", "metrics"], input=exposition, text=True, capture_output=True
        )
        assert "error" not in (check.stdout + check.stderr).lower(), check.stdout + check.stderr


# -- fuzzing ------------------------------------------------------------------------------------

_VALID = trace_request(training_spans(resource(), trace_id=0xF00D)).SerializeToString()
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_payloads = st.one_of(
    st.binary(max_size=2_000).map(lambda b: ("raw", b)),
    st.tuples(st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda m: ("mutated", _VALID[: m[0]] + m[1] + _VALID[m[0] + len(m[1]) :])
    ),
    st.dictionaries(
        st.sampled_from(["resourceSpans", "resourceMetrics", "x"]), _json_values, max_size=2
    ).map(lambda d: ("json", json.dumps(d).encode())),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=_payloads, target=st.sampled_from(["traces", "metrics"]), use_grpc=st.booleans())
def test_fuzzed_payloads_never_take_the_server_down(
    fuzz_server: ReceiverServer, payload: tuple[str, bytes], target: str, use_grpc: bool
) -> None:
    kind, body = payload
    if use_grpc and kind != "json":
        with grpc_channel(fuzz_server.grpc_port) as channel:
            try:
                grpc_export(channel, TRACES if target == "traces" else METRICS, body)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
        return
    content_type = JSON if kind == "json" else PROTOBUF
    status, _, _ = post(fuzz_server.http_port, f"/v1/{target}", body, content_type)
    assert status in (200, 400), status


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from provtel.exporter.receiver import ReceiverConfig

    server = ReceiverServer(
        ReceiverConfig(
            output_dir=tmp_path_factory.mktemp("fuzz") / "out",
            grpc_port=0,
            http_port=0,
            grace_s=3600,
        )
    )
    server.start()
    yield server
    # Whatever the fuzzer got accepted must still make valid documents, and a valid client
    # sending alongside must have lost nothing.
    good = training_spans(resource(), trace_id=0xC0FFEE)
    status, _, _ = post(server.http_port, "/v1/traces", trace_request(good).SerializeToString())
    server.stop(grace_s=1.0)
    assert status == 200
    docs = server.receiver.router.finalize_all()
    assert docs, "the valid client's run"
    for doc in docs:
        # A mutation that keeps a span id but changes the span is a second span with that id:
        # the document shows both and validation names the clash, which is the right verdict
        # on such input. Nothing else may be wrong.
        problems = check_file(doc, round_trips=False).problems
        assert [p for p in problems if "span ids must be unique" not in p] == [], problems
    assert_valid(next(d for d in docs if f"{0xC0FFEE:032x}" in d.read_text()), round_trips=False)
    ids = {
        a["otel:span_id"]
        for doc in docs
        for a in json.loads(doc.read_text())["activity"].values()
        if a.get("otel:trace_id") == f"{0xC0FFEE:032x}"
    }
    assert ids == {f"{s.context.span_id:016x}" for s in good}


def test_a_refused_request_leaves_the_connection_usable(serve: Serve) -> None:
    import http.client

    server = serve(token="tok")
    body = trace_request(training_spans(resource())).SerializeToString()
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        for token, expected in (("nope", 401), ("tok", 200)):
            conn.request(
                "POST",
                "/v1/traces",
                body=body,
                headers={"Content-Type": PROTOBUF, "Authorization": f"Bearer {token}"},
            )
            resp = conn.getresponse()
            resp.read()
            assert resp.status == expected
            assert resp.getheader("Connection") != "close"  # one connection for both
    finally:
        conn.close()


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 1024], ids=["one piece", "split"])
def test_a_span_with_a_malformed_attribute_refuses_the_whole_request(
    serve: Serve, chunk_bytes: int
) -> None:
    """Spans are decoded with their attributes left encoded; a malformed attribute is still a
    400 for the whole request, nothing of it journaled -- also when the request is split and
    the bad span is in its last chunk."""
    from provtel.exporter.prov.otlp import SpansRequest, parse_protobuf
    from provtel.exporter.receiver.decode import chunks

    server = serve(decode_chunk_bytes=chunk_bytes, grace_s=3600)
    good = trace_request(training_spans(resource(), epochs=12)).SerializeToString()
    request = parse_protobuf(good, SpansRequest)
    spans = request.resource_spans[0].scope_spans[0].spans  # type: ignore[attr-defined]
    spans[len(spans) - 1].attributes.append(b"\x0a\xff\xff")
    bad = request.SerializeToString()
    pieces = len(list(chunks(bad, "traces", chunk_bytes)))
    assert pieces == 1 if chunk_bytes > len(bad) else pieces > 2
    status, _, reply = post(server.http_port, "/v1/traces", bad)
    assert status == 400 and _status(reply).code == INVALID
    with grpc_channel(server.grpc_port) as channel, pytest.raises(grpc.RpcError) as refused:
        grpc_export(channel, TRACES, bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not list(server.output_dir.glob("*/journal.jsonl"))  # nothing kept
    assert post(server.http_port, "/v1/traces", good)[0] == 200

    from provtel.exporter.prov.otlp import MetricsRequest

    points = parse_protobuf(metrics_request(resource()).SerializeToString(), MetricsRequest)
    metric = points.resource_metrics[0].scope_metrics[0].metrics[0]  # type: ignore[attr-defined]
    getattr(metric, metric.WhichOneof("data")).data_points[0].attributes.append(b"\x0a\xff")
    status, _, reply = post(server.http_port, "/v1/metrics", points.SerializeToString())
    assert status == 400 and _status(reply).code == INVALID


def test_the_archive_is_private_as_run_folders_are(serve: Serve, tmp_path: Path) -> None:
    """``--archive`` holds everything the run folders hold: created 0600 (the configured file
    mode), appended a whole line at a time."""
    import os
    import stat

    archive = tmp_path / "new folder" / "otlp.jsonl"
    server = serve(archive=archive)
    request = trace_request(training_spans(resource()))
    assert post(server.http_port, "/v1/traces", request.SerializeToString())[0] == 200
    server.stop(grace_s=1.0)
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    (line,) = archive.read_text(encoding="utf-8").splitlines()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from provtel.exporter.prov.otlp import parse_json

    assert parse_json(line, ExportTraceServiceRequest) == request
    (run_dir,) = [d for d in server.output_dir.iterdir() if d.is_dir()]
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700


def _gauge_points(instance: str, n: int) -> ExportMetricsServiceRequest:
    """One resource's gauge with ``n`` points (one series), as a metrics request."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    for key, value in (("service.name", "train"), ("service.instance.id", instance)):
        rm.resource.attributes.add(key=key).value.string_value = value
    gauge = rm.scope_metrics.add().metrics.add(name="hw.power", unit="W").gauge
    for i in range(n):
        gauge.data_points.add(time_unix_nano=1_795_000_000_000_000_000 + i, as_double=i + 0.5)
    return request


def test_a_split_request_refused_part_way_is_not_journaled_twice_when_retried(
    serve: Serve,
) -> None:
    """A request split into chunks whose later chunk is refused ("retry later") had its first
    chunks journaled; the client's retry (the same bytes) journals only the rest: every point
    is one row, none twice."""
    server = serve(decode_chunk_bytes=1024, max_pending_resources=1, grace_s=3600)
    request = _gauge_points("instance-a", 300)
    request.MergeFrom(_gauge_points("instance-b", 300))  # a second resource: a second pending
    body = request.SerializeToString()
    from provtel.exporter.receiver.decode import chunks

    assert len(list(chunks(body, "metrics", 1024))) > 4
    status, headers, _ = post(server.http_port, "/v1/metrics", body)
    assert status == 503 and "retry-after" in headers  # instance-b's points: no room
    # instance-a's spans arrive: its run takes its pending points, so there is room again.
    instance_a = Resource.create({"service.name": "train", "service.instance.id": "instance-a"})
    spans = training_spans(instance_a, trace_id=0xA11)
    assert post(server.http_port, "/v1/traces", trace_request(spans).SerializeToString())[0] == 200
    assert post(server.http_port, "/v1/metrics", body)[0] == 200  # the client's retry
    server.stop(grace_s=1.0)

    (run_dir,) = [d for d in server.output_dir.iterdir() if (d / "journal.jsonl").exists()]
    (series,) = (run_dir / "metrics").glob("hw.power*.csv")
    times = [line.split(",")[0] for line in series.read_text().splitlines()[1:]]
    assert len(times) == 300 and len(set(times)) == 300  # instance-a's points, each once
    (pending,) = (server.output_dir / ".pending").glob("*.jsonl")
    waiting = [json.loads(line) for line in pending.read_text().splitlines()]
    assert sum(len(rec["points"]) for rec in waiting) == 300  # instance-b's, each once
