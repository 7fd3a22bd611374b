"""Spans journaled as the receiver got them (``otlp_spans`` lines), converted at finalisation.

``provtel serve`` checks a trace request at ingest (ids, times, attributes: what it must refuse
or reject) and journals its spans as OTLP protobuf, one line per trace of a request; they become
span records only when the journal is read (finalisation, restart, recovery, merge). These tests
show, from the user's side, that nothing of that is visible: the same partial-success answers,
the same documents as the records path (``provtel convert`` of the archive), nothing lost across
a SIGKILL and a restart.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, TraceFlags

from provtel.exporter.prov import journal
from provtel.exporter.prov.otlp import (
    SpansRequest,
    convert_spans,
    parse_protobuf,
    scan_spans,
)
from provtel.exporter.prov.validate import assert_valid
from tests.receiver.helpers import (
    TRACES,
    FixedTrace,
    ServeProcess,
    documents,
    grpc_channel,
    grpc_export,
    normalised,
    post,
    resource,
    trace_request,
    wait_for,
)
from tests.support import provtel_cli

T1, T2 = 0x7111, 0x7222


def plain_spans(
    res: Resource, trace_id: int, seed: int, epochs: int = 3, root: bool = True
) -> list[ReadableSpan]:
    """Spans with nothing the receiver must write at ingest (no per-step columns): a run,
    epochs with an event, a link and a list attribute, checkpoints."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=res, id_generator=FixedTrace(trace_id, seed))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("provtel.instrumentation.torch", "0.1.0")
    run = tracer.start_span(
        "train", attributes={"ml.activity": "run", "ml.hparam.lr": 0.01, "ml.model.class": "Net"}
    )
    from opentelemetry import trace

    other = SpanContext(trace_id + 1, 0xABC, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(run, end_on_exit=False):
        for epoch in range(epochs):
            with tracer.start_as_current_span(
                f"epoch {epoch}",
                attributes={
                    "ml.activity": "epoch",
                    "ml.context": "training",
                    "ml.epoch": epoch,
                    "ml.step.first": 10 * epoch,  # scalars under ml.step.: nothing to write
                    "ml.step.count": 10,
                    "ml.dataset.name": "toy",
                    "ml.tags": ["a", "b"],
                },
                links=[Link(other, {"why": "warm start"})],
            ) as span:
                span.add_event("lr changed", {"lr": 0.01 / (epoch + 1)})
            with tracer.start_as_current_span(
                "save",
                attributes={
                    "ml.activity": "checkpoint",
                    "ml.checkpoint.operation": "save",
                    "file.path": f"ckpt_{seed}_{epoch}.pt",
                    "file.size": 100 + epoch,
                },
            ):
                pass
    if root:
        run.end()
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def activity_ids(doc: dict[str, Any]) -> set[str]:
    return {a["otel:span_id"] for a in doc["activity"].values() if "otel:span_id" in a}


def journal_lines(output: Path) -> list[str]:
    """The record type of every journal line under ``output``."""
    kinds = []
    for path in sorted(output.glob("*/journal.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            kinds.append(line.split('"', 4)[3])
    return kinds


def test_spans_journaled_as_received_make_the_documents_converted_spans_make(
    tmp_path: Path,
) -> None:
    """Two ranks of a job (trace T1) over HTTP and gRPC, one request also holding another
    run's spans (trace T2) and two spans OTLP rejects, one request split into chunks: the
    answers are OTLP's partial success as before; the journals hold only ``otlp_spans`` lines
    (no span converted at ingest); after a restart the runs are finalised into valid documents
    equal to what ``provtel convert`` (which converts every span) makes of the archive."""
    output, archive = tmp_path / "served", tmp_path / "otlp.jsonl"
    rank0 = plain_spans(resource(rank=0, world=2), T1, seed=1, epochs=20)
    rank1 = plain_spans(resource(rank=1, world=2), T1, seed=2)
    solo = plain_spans(resource(), T2, seed=3)
    mixed = trace_request(rank1)
    mixed.MergeFrom(trace_request(solo))
    bad_scope = mixed.resource_spans[1].scope_spans[0]
    zero_id, backwards = bad_scope.spans.add(), bad_scope.spans.add()
    zero_id.CopyFrom(bad_scope.spans[0])
    zero_id.span_id = bytes(8)
    backwards.CopyFrom(bad_scope.spans[1])
    backwards.span_id = b"\x00" * 7 + b"\x99"
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1

    server = ServeProcess(
        output, "--grace", "3600", "--archive", str(archive), "--decode-chunk-kib", "1"
    )
    try:
        big = trace_request(rank0).SerializeToString()
        assert len(big) > 3 * 1024  # decoded and journaled in chunks
        status, _, reply = post(server.http_port, "/v1/traces", big)
        assert status == 200
        assert not ExportTraceServiceResponse.FromString(reply).HasField("partial_success")
        with grpc_channel(server.grpc_port) as channel:
            reply = grpc_export(channel, TRACES, mixed.SerializeToString())
        partial = ExportTraceServiceResponse.FromString(reply).partial_success
        assert partial.rejected_spans == 2
        assert partial.error_message == "span_id must be 8 bytes, not all zero"
    finally:
        assert server.stop() == 0, server.log_text()
    kinds = journal_lines(output)
    assert "otlp_spans" in kinds and "span" not in kinds
    assert kinds.count("otlp_spans") > 3  # the chunks of rank 0's request, one per trace of the mix
    assert not documents(output)

    # A restart reopens both runs; T2's root is there, T1's ranks both sent theirs.
    server = ServeProcess(output, "--grace", "0.2")
    try:
        served = wait_for(lambda: len(documents(output)) == 2 and documents(output), what="docs")
    finally:
        assert server.stop() == 0, server.log_text()
    assert "reopened run" in server.log_text()
    by_trace = {}
    for path in served:
        doc = assert_valid(path)
        (trace,) = {a["otel:trace_id"] for a in doc["activity"].values() if "otel:trace_id" in a}
        by_trace[int(trace, 16)] = (path, doc)
    sent = {
        T1: {f"{s.context.span_id:016x}" for s in rank0 + rank1},
        T2: {f"{s.context.span_id:016x}" for s in solo},
    }
    assert {t: activity_ids(doc) for t, (_, doc) in by_trace.items()} == sent
    _, doc1 = by_trace[T1]
    ranks = sorted(a["otel:ml.rank"] for a in doc1["agent"].values() if "otel:ml.rank" in a)
    assert ranks == [0, 1]
    checkpoints = {
        e["dcterms:identifier"] for e in doc1["entity"].values() if "dcterms:identifier" in e
    }
    assert {"ckpt_1_19.pt", "ckpt_2_2.pt"} <= {str(c).rsplit("/", 1)[-1] for c in checkpoints}

    converted = provtel_cli("convert", archive, "--output", tmp_path / "converted")
    assert converted.returncode == 0, converted.stderr
    again = {}
    for path in documents(tmp_path / "converted"):
        doc = assert_valid(path, round_trips=False)
        (trace,) = {a["otel:trace_id"] for a in doc["activity"].values() if "otel:trace_id" in a}
        again[int(trace, 16)] = path
    assert set(again) == {T1, T2}
    for trace, (path, _) in by_trace.items():
        assert normalised(again[trace]) == normalised(path)


def test_a_receiver_killed_after_acknowledging_keeps_every_span_journaled_as_otlp(
    tmp_path: Path,
) -> None:
    """SIGKILL after the receiver acknowledged spans it had journaled as OTLP: the restarted
    receiver reopens the run (counting its spans from those lines), takes the rest, and the
    document holds every span acknowledged before and after."""
    output = tmp_path / "served"
    res = resource(rank=0)
    spans = plain_spans(res, T1, seed=7, epochs=10, root=False)
    first = ServeProcess(output, "--grace", "0.2")
    try:
        for i in range(0, len(spans), 8):  # an exporter's batches
            body = trace_request(spans[i : i + 8]).SerializeToString()
            assert post(first.http_port, "/v1/traces", body)[0] == 200
    finally:
        first.kill()
    assert set(journal_lines(output)) == {"resource", "otlp_spans"}

    root = plain_spans(res, T1, seed=7, epochs=10)  # the same run, now with its root span
    second = ServeProcess(output, "--grace", "0.2")
    try:
        with grpc_channel(second.grpc_port) as channel:
            grpc_export(channel, TRACES, trace_request(root[-1:]).SerializeToString())
        (document,) = wait_for(lambda: documents(output), what="the run's document")
    finally:
        assert second.stop() == 0, second.log_text()
    assert f", {len(spans)} spans so far)" in second.log_text()
    doc = assert_valid(document)
    assert activity_ids(doc) == {f"{s.context.span_id:016x}" for s in root}


# -- the check at ingest is convert_spans' check ---------------------------------------------------


_ids = st.sampled_from([bytes(16), b"\x01" * 15, b"\x11" * 16, b"\x22" * 16, b"\x33" * 16])
_span_ids = st.sampled_from([bytes(8), b"\x05" * 7, b"\x06" * 8, b"\x07" * 8, b""])


@st.composite
def requests(draw: Any) -> bytes:
    """Trace requests mixing traces, resources and scopes, with some spans OTLP rejects."""
    request = ExportTraceServiceRequest()
    for r in range(draw(st.integers(0, 3))):
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        rs.schema_url = draw(st.sampled_from(["", "https://opentelemetry.io/schemas/1.21.0"]))
        for s in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{s}"
            for _ in range(draw(st.integers(0, 5))):
                span = ss.spans.add(
                    trace_id=draw(_ids),
                    span_id=draw(_span_ids),
                    parent_span_id=draw(st.sampled_from([b"", b"\x08" * 8, b"\x09" * 3])),
                    name=draw(st.sampled_from(["a", "b"])),
                    start_time_unix_nano=draw(st.integers(1, 10)),
                    end_time_unix_nano=draw(st.integers(0, 10)),
                    flags=draw(st.sampled_from([0, 0x100, 0x300])),
                )
                span.attributes.add(key="k").value.int_value = draw(st.integers(0, 3))
                if draw(st.booleans()):
                    span.attributes.add(key="ml.step.first").value.int_value = 3
    return request.SerializeToString()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=requests())
def test_fuzz_the_ingest_check_rejects_and_keeps_what_conversion_does(wire: bytes) -> None:
    """Whatever a request mixes, the spans journaled for each trace, converted later, are
    exactly :func:`convert_spans`' records of that trace, in order, and the same spans are
    rejected for the same first reason."""
    request = parse_protobuf(wire, SpansRequest)
    scan = scan_spans(request, wire)
    assert scan is not None
    expected = convert_spans(parse_protobuf(wire, SpansRequest))
    assert (scan.rejected, scan.error) == (expected.rejected, expected.error)
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for rec in expected.records:
        by_trace.setdefault(rec["trace_id"], []).append(rec)
    assert [t.trace_id for t in scan.traces] == list(by_trace)
    for spans in scan.traces:
        line = journal.encode_otlp_spans(spans.payload).encode() + b"\n"
        got = [r.data for r in journal.spans_of(journal.decode(line))]
        want = by_trace[spans.trace_id]
        assert [(r["span_id"], r["name"], r["resource"]) for r in got] == [
            (r["span_id"], r["name"], journal.resource_id(r["resource"])) for r in want
        ]
        assert [{**r, "resource": None} for r in got] == [{**r, "resource": None} for r in want]
        assert spans.spans == len(want)
        roots = [r["resource"] for r in want if not r["parent_span_id"] or r["parent_is_remote"]]
        assert {id(r) for r in spans.roots} <= {id(r) for r in spans.resources}
        assert sorted(map(journal.resource_id, spans.roots)) == sorted(
            set(map(journal.resource_id, roots))
        )


@pytest.mark.parametrize("kind", ["array", "packed", "logged"])
def test_spans_that_write_series_at_ingest_are_converted_at_ingest(kind: str) -> None:
    """Per-step columns (arrays or packed strings) and logged values become series rows when
    they arrive, so a request holding them is converted at once (the records path), whatever
    else it holds -- also when the same attribute was seen plain before."""
    request = trace_request(plain_spans(resource(), T1, seed=4))
    attributes = request.resource_spans[0].scope_spans[-1].spans[-1].attributes
    if kind == "array":
        attributes.add(key="ml.step.loss").value.array_value.values.add().double_value = 0.5
    elif kind == "packed":
        attributes.add(key="ml.step.loss.packed").value.string_value = "AAAA"
    else:
        attributes.add(key="ml.log.name").value.string_value = "accuracy"
    wire = request.SerializeToString()
    assert scan_spans(parse_protobuf(wire, SpansRequest), wire) is None
    assert scan_spans(parse_protobuf(wire, ExportTraceServiceRequest), wire) is None
    plain = trace_request(plain_spans(resource(), T1, seed=4)).SerializeToString()
    scan = scan_spans(parse_protobuf(plain, SpansRequest), plain)
    assert scan is not None and scan.traces[0].payload == plain  # journaled as it came


@pytest.mark.parametrize("seed", [0, 1])
def test_a_random_split_of_traces_keeps_resource_and_scope(seed: int) -> None:
    """Spans of two traces interleaved in one scope: each trace's payload keeps the resource
    and the scope (name, version, schema URLs) its spans came with."""
    rng = random.Random(seed)
    spans = plain_spans(resource(rank=0), T1, seed=5) + plain_spans(resource(rank=0), T2, seed=6)
    rng.shuffle(spans)
    request = trace_request(spans)
    request.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.21.0"
    request.resource_spans[0].scope_spans[0].schema_url = "https://example.org/scope"
    wire = request.SerializeToString()
    scan = scan_spans(parse_protobuf(wire, SpansRequest), wire)
    assert scan is not None and len(scan.traces) == 2
    for spans_of_trace in scan.traces:
        part = ExportTraceServiceRequest.FromString(spans_of_trace.payload)
        (rs,) = part.resource_spans
        assert rs.resource == request.resource_spans[0].resource
        assert rs.schema_url == request.resource_spans[0].schema_url
        (ss,) = rs.scope_spans
        assert ss.scope == request.resource_spans[0].scope_spans[0].scope
        assert ss.schema_url == "https://example.org/scope"
        assert {s.trace_id.hex() for s in ss.spans} == {spans_of_trace.trace_id}
