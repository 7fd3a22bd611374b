"""OTLP (protobuf and JSON) -> the same records the in-process exporter builds."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provtel.exporter.prov.otlp import (
    MetricsRequest,
    OtlpError,
    SpansRequest,
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
    request = encode_metrics(data)
    zero = request.resource_metrics[0].scope_metrics[0].metrics.add(name="zeros", unit="1")
    zero.gauge.data_points.add(time_unix_nano=1, as_int=0)  # defaults: not mistaken for unset
    zero.gauge.data_points.add(time_unix_nano=2, as_double=-0.0)
    zero.gauge.data_points.add(time_unix_nano=3, as_int=-5).attributes.add(key="k")
    wire = request.SerializeToString()
    full = convert_metrics(parse_protobuf(wire, ExportMetricsServiceRequest))
    assert full.rejected == 0
    assert full.points[:-3] == list(metric_points(data))
    assert [(p["value"], p["attributes"]) for p in full.points[-3:]] == [
        (0, {}),
        (-0.0, {}),
        (-5, {"k": None}),
    ]
    # As the receiver decodes them (attributes left encoded): the same records.
    for _ in range(2):
        fast = convert_metrics(parse_protobuf(wire, MetricsRequest))
        assert json.dumps(fast.points) == json.dumps(full.points)


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

    for batch in (
        convert_spans(request),
        convert_spans(parse_protobuf(request.SerializeToString(), SpansRequest)),
    ):
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


def _unusual_attributes_request() -> ExportTraceServiceRequest:
    """Two spans with every kind of attribute value, including the defaults a fast path could
    mistake (empty string, 0, False), NaN, bytes, arrays, maps, an empty value, a repeated key."""
    request = trace_request(training_spans(resource()))
    spans = request.resource_spans[0].scope_spans[0].spans
    for span in list(spans)[:2]:
        add = span.attributes.add
        add(key="empty").value.string_value = ""
        add(key="zero").value.int_value = 0
        add(key="negative").value.int_value = -(2**63)
        add(key="false").value.bool_value = False
        add(key="true").value.bool_value = True
        add(key="nan").value.double_value = float("nan")
        add(key="zero.0").value.double_value = 0.0
        add(key="bytes").value.bytes_value = b"\x00\xff"
        add(key="unset")
        array = add(key="array").value.array_value.values
        array.add().int_value = 1
        array.add().string_value = ""
        kv = add(key="map").value.kvlist_value.values.add(key="inner")
        kv.value.double_value = 2.5
        add(key="empty").value.string_value = "last wins"
    return request


def test_spans_decoded_with_their_attributes_encoded_give_the_same_records() -> None:
    """The receiver decodes spans as ``SpansRequest`` (attributes left as bytes, converted
    through a cache): the records are those of the full decoding, request after request."""
    wire = _unusual_attributes_request().SerializeToString()
    expected = convert_spans(parse_protobuf(wire, ExportTraceServiceRequest)).records
    for _ in range(2):  # the second time from the cache
        batch = convert_spans(parse_protobuf(wire, SpansRequest))
        assert json.dumps(batch.records) == json.dumps(expected)  # NaN compares as text
    first, second = batch.records[0]["attributes"], batch.records[1]["attributes"]
    assert first["empty"] == "last wins" and first["zero"] == 0 and first["false"] is False
    assert first["unset"] is None and first["bytes"] == "00ff"
    assert first["array"] == [1, ""] and first["map"] == {"inner": 2.5}
    first["array"].append("changed")  # a record's arrays and maps are its own
    assert second["array"] == [1, ""]


def test_a_malformed_attribute_is_an_otlp_error_when_its_span_is_converted() -> None:
    good = trace_request(training_spans(resource())).SerializeToString()
    request = parse_protobuf(good, SpansRequest)
    request.resource_spans[0].scope_spans[0].spans[0].attributes.append(b"\x0a\xff\xff")
    wire = request.SerializeToString()
    with pytest.raises(OtlpError, match="malformed protobuf"):
        parse_protobuf(wire, ExportTraceServiceRequest)
    with pytest.raises(OtlpError, match="malformed protobuf KeyValue"):
        convert_spans(parse_protobuf(wire, SpansRequest))
    assert json.loads(to_json(parse_protobuf(wire[:0], SpansRequest))) == {}


def test_a_malformed_point_attribute_is_an_otlp_error_when_its_point_is_converted() -> None:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    good = encode_metrics(metrics_data(resource())).SerializeToString()
    request = parse_protobuf(good, MetricsRequest)
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]  # type: ignore[attr-defined]
    data = getattr(metric, metric.WhichOneof("data"))
    data.data_points[0].attributes.append(b"\x0a\xff\xff")
    wire = request.SerializeToString()
    with pytest.raises(OtlpError, match="malformed protobuf"):
        parse_protobuf(wire, ExportMetricsServiceRequest)
    with pytest.raises(OtlpError, match="malformed protobuf KeyValue"):
        convert_metrics(parse_protobuf(wire, MetricsRequest))
