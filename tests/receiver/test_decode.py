"""Chunked decoding: a split request holds exactly what the whole one holds, in its order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provtel.exporter.prov.otlp import convert_metrics, convert_spans
from provtel.exporter.receiver.decode import DecodeBudget, chunks
from tests.receiver.helpers import metrics_request, resource, trace_request, training_spans

_TRACES = [
    trace_request(
        training_spans(resource(rank=r), trace_id=0x77, seed=r, epochs=e)
        + training_spans(resource(rank=r + 1), trace_id=0x78, seed=r + 9, epochs=e)
    )
    for r, e in ((0, 1), (2, 6), (4, 30))
]


def _merged(requests: list[ExportTraceServiceRequest]) -> ExportTraceServiceRequest:
    out = ExportTraceServiceRequest()
    for request in requests:
        out.resource_spans.extend(request.resource_spans)
    return out


@settings(max_examples=40, deadline=None)
@given(which=st.sampled_from(range(len(_TRACES))), limit=st.integers(1, 20_000))
def test_split_trace_requests_keep_every_span_with_its_resource(which: int, limit: int) -> None:
    request = _TRACES[which]
    data = request.SerializeToString()
    parts = [ExportTraceServiceRequest.FromString(p) for p in chunks(data, "traces", limit)]
    if len(data) > limit:
        assert len(parts) > 1
    assert convert_spans(_merged(parts)).records == convert_spans(request).records


@settings(max_examples=30, deadline=None)
@given(ranks=st.integers(1, 4), limit=st.integers(1, 3_000))
def test_split_metric_requests_keep_every_point(ranks: int, limit: int) -> None:
    request = ExportMetricsServiceRequest()
    for rank in range(ranks):
        request.resource_metrics.extend(metrics_request(resource(rank=rank)).resource_metrics)
    data = request.SerializeToString()
    points = [
        convert_metrics(ExportMetricsServiceRequest.FromString(p)).points
        for p in chunks(data, "metrics", limit)
    ]
    assert [p for part in points for p in part] == convert_metrics(request).points


def test_malformed_framing_is_an_otlp_error() -> None:
    import pytest

    from provtel.exporter.prov.otlp import OtlpError

    data = _TRACES[2].SerializeToString()
    with pytest.raises(OtlpError):
        list(chunks(data[:-3], "traces", 1_000))  # the last span cut short
    with pytest.raises(OtlpError):
        list(chunks(b"\x0b" * 5_000, "traces", 1_000))  # wire type 3 (groups)


def test_the_decode_budget_lets_an_oversized_decode_run_alone() -> None:
    budget = DecodeBudget(1_000)
    with budget.hold(10**6):  # far larger than the budget: admitted when nothing else runs
        assert budget.used == 1_000
    assert budget.used == 0
