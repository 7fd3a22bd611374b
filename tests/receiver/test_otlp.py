"""OTLP (protobuf and JSON) -> the same records the in-process exporter builds."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provtel.exporter.prov.otlp import (
    OtlpError,
    convert_metrics,
    convert_spans,
    parse_json,
    parse_protobuf,
    to_json,
)
from provtel.exporter.prov.records import metric_points, span_record
from tests.receiver.helpers import metrics_data, resource, trace_request, training_spans


def test_spans_over_otlp_give_the_in_process_records() -> None:
    spans = training_spans(resource(rank=0, world=2))
    wire = trace_request(spans).SerializeToString()
    batch = convert_spans(parse_protobuf(wire, ExportTraceServiceRequest))
    assert batch.rejected == 0
    assert batch.records == [span_record(s) for s in spans]


def test_metrics_over_otlp_give_the_in_process_records() -> None:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    data = metrics_data(resource(rank=1))
    wire = encode_metrics(data).SerializeToString()
    batch = convert_metrics(parse_protobuf(wire, ExportMetricsServiceRequest))
    assert batch.rejected == 0
    assert batch.points == list(metric_points(data))


def test_otlp_json_uses_hex_ids_and_round_trips() -> None:
    request = trace_request(training_spans(resource()))
    line = to_json(request)
    first = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert first["traceId"] == f"{0x1234:032x}"  # hex, not base64
    assert len(first["spanId"]) == 16
    assert parse_json(line, ExportTraceServiceRequest) == request


def test_collector_style_json() -> None:
    """As the Collector's file exporter writes it: camelCase, enums as integers, 64-bit
    integers as strings, hex ids, unknown fields."""
    line = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "train"}},
                        {"key": "ml.rank", "value": {"intValue": "1"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "user.train"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "",
                                "name": "train",
                                "kind": 1,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [
                                    {"key": "ml.activity", "value": {"stringValue": "run"}},
                                    {"key": "ml.hparam.lr", "value": {"doubleValue": 0.1}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {
                                        "key": "ml.step.loss",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"doubleValue": 1.5}, {"intValue": "2"}]
                                            }
                                        },
                                    },
                                ],
                                "status": {"code": 2, "message": "failed"},
                                "flags": 256,
                                "someFutureField": {"x": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    batch = convert_spans(parse_json(json.dumps(line), ExportTraceServiceRequest))
    (rec,) = batch.records
    assert rec["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert rec["span_id"] == "eee19b7ec3c1b174"
    assert rec["parent_span_id"] is None and rec["parent_is_remote"] is False
    assert (rec["kind"], rec["status"], rec["status_description"]) == (
        "INTERNAL",
        "ERROR",
        "failed",
    )
    assert (rec["start"], rec["end"]) == (1544712660000000000, 1544712661000000000)
    assert rec["attributes"] == {
        "ml.activity": "run",
        "ml.hparam.lr": 0.1,
        "ok": True,
        "ml.step.loss": [1.5, 2],
    }
    assert rec["resource"] == {"service.name": "train", "ml.rank": 1}
    assert rec["scope"] == {"name": "user.train", "version": None}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "malformed JSON"),
        (b"[]", "JSON object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "hex"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 7}]}]}]}', "hex string"),
        (b'{"resourceSpans": "nope"}', "malformed OTLP/JSON"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_malformed_json_is_an_otlp_error(payload: bytes, reason: str) -> None:
    with pytest.raises(OtlpError, match=reason):
        parse_json(payload, ExportTraceServiceRequest)


def test_malformed_protobuf_is_an_otlp_error() -> None:
    with pytest.raises(OtlpError, match="malformed protobuf"):
        parse_protobuf(b"\x0a\xff\xff\xff\xff\x0f", ExportTraceServiceRequest)


def test_spans_that_would_break_the_document_are_rejected_and_counted() -> None:
    spans = training_spans(resource())
    request = trace_request(spans)
    kept = len(spans)
    bad = request.resource_spans[0].scope_spans[0].spans
    template = bad[0]
    cases = {
        "zero trace id": {"trace_id": bytes(16)},
        "short span id": {"span_id": b"\x01\x02"},
        "long parent": {"parent_span_id": b"\x01" * 9},
        "ends before it starts": {"end_time_unix_nano": template.start_time_unix_nano - 1},
    }
    for n, changes in enumerate(cases.values()):
        span = bad.add()
        span.CopyFrom(template)
        span.span_id = (n + 1).to_bytes(8, "big")
        for key, value in changes.items():
            setattr(span, key, value)
    mixed = bad.add()
    mixed.CopyFrom(template)
    mixed.span_id = b"\x99" * 8
    loss = mixed.attributes.add(key="ml.step.mixed")
    loss.value.array_value.values.add().double_value = 1.0
    loss.value.array_value.values.add().string_value = "x"

    batch = convert_spans(request)
    assert batch.rejected == len(cases) + 1
    assert len(batch.records) == kept
    assert "trace_id" in batch.error


def test_points_the_store_cannot_hold_are_rejected_or_skipped() -> None:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    summary = scope.metrics.add(name="s")
    summary.summary.data_points.add(count=1, sum=2.0)
    hist = scope.metrics.add(name="h")
    hist.histogram.data_points.add(count=3, time_unix_nano=5)  # no sum
    gauge = scope.metrics.add(name="g")
    gauge.gauge.data_points.add(as_double=1.0, time_unix_nano=5)
    gauge.gauge.data_points.add(time_unix_nano=6, flags=1)  # no recorded value: skipped
    batch = convert_metrics(request)
    assert batch.rejected == 2
    assert [(p["name"], p["value"]) for p in batch.points] == [("g", 1.0)]
