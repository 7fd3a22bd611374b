"""OTLP requests (protobuf or OTLP/JSON) -> the records of :mod:`provtel.exporter.prov.records`.

The receiver (``provtel serve``) and the file converter (``provtel convert``) hand the PROV
mapping exactly the dicts the in-process exporter builds from SDK objects, so there is one
mapping for every input path. This module only converts and checks; it never writes.

What a record cannot carry, or what would make the PROV document invalid, is *rejected* and
counted, in the words of OTLP's partial success: a span with a malformed trace or span id, an end
before its start, or a per-step array (``ml.step.*``) of mixed
types; a data point of a summary metric or a histogram without a sum. Everything else is kept
as it came.

OTLP/JSON differs from the protobuf JSON mapping in one way that matters here: trace and span
ids are hex strings, not base64 (:func:`parse_json`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "MetricsBatch",
    "MetricsRequest",
    "OtlpError",
    "ResourcePoints",
    "SpanBatch",
    "SpanScan",
    "SpansRequest",
    "TraceSpans",
    "attributes",
    "convert_metrics",
    "convert_spans",
    "parse_json",
    "parse_protobuf",
    "scan_spans",
]

_KINDS = dict(enumerate(("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")))
_STATUSES = dict(enumerate(("UNSET", "OK", "ERROR")))
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_REMOTE = _HAS_IS_REMOTE | _IS_REMOTE
_NO_RECORDED_VALUE = 1
_STEP_PREFIX = "ml.step."

RequestT = TypeVar("RequestT", bound=Message)


class OtlpError(ValueError):
    """The payload is not a valid OTLP request (HTTP 400, gRPC INVALID_ARGUMENT)."""


# -- decoding -----------------------------------------------------------------------------------


def _raw_attributes_type(module: Any, root: str, messages: frozenset[str]) -> type[Message]:
    """A message type with the wire format of an OTLP export request (it is OTLP's
    ``TracesData`` / ``MetricsData``) in which the attributes of ``messages`` (spans, data
    points) stay encoded ``KeyValue`` bytes.

    Decoding a ``KeyValue`` into upb messages and reading it back is most of the cost of
    converting a span or a point; as bytes, the attributes a request repeats (the same names
    and values item after item) are converted once and then found in :data:`_ATTRIBUTE_CACHE`.
    Built in a private descriptor pool from the installed OTLP descriptors, so nothing is
    redefined."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (common_pb2, resource_pb2, module):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.DESCRIPTOR.CopyToProto(proto)
        if dependency is module:
            for message in proto.message_type:
                if message.name in messages:
                    (attributes,) = [f for f in message.field if f.name == "attributes"]
                    attributes.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    attributes.ClearField("type_name")
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{proto.package}.{root}"))


#: What the receiver decodes trace requests into (:func:`convert_spans` takes it, as it takes
#: an ``ExportTraceServiceRequest``). Decoding it does not look into attributes: a malformed
#: attribute is found (an :class:`OtlpError`) when the span is converted.
SpansRequest: type[Message] = _raw_attributes_type(trace_pb2, "TracesData", frozenset({"Span"}))
#: The same for metrics requests (:func:`convert_metrics`): data points' attributes as bytes.
MetricsRequest: type[Message] = _raw_attributes_type(
    metrics_pb2,
    "MetricsData",
    frozenset(
        {"NumberDataPoint", "HistogramDataPoint", "ExponentialHistogramDataPoint",
         "SummaryDataPoint"}
    ),
)  # fmt: skip


def parse_protobuf(data: bytes, message_type: type[RequestT]) -> RequestT:
    """Decode a binary protobuf request; :class:`OtlpError` when it is malformed."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OtlpError(f"malformed protobuf {message_type.__name__}: {exc}") from None
    return message


# Fields that hold trace/span ids, in the JSON names json_format accepts (camelCase and proto).
_ID_FIELDS = frozenset(
    {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
)
# Where ids occur: spans, span links, exemplars of data points.
_ID_CONTAINERS = frozenset(
    {
        "resourceSpans",
        "resource_spans",
        "scopeSpans",
        "scope_spans",
        "spans",
        "links",
        "resourceMetrics",
        "resource_metrics",
        "scopeMetrics",
        "scope_metrics",
        "metrics",
        "gauge",
        "sum",
        "histogram",
        "exponentialHistogram",
        "exponential_histogram",
        "summary",
        "dataPoints",
        "data_points",
        "exemplars",
    }
)


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON's hex ids in place as the base64 json_format expects.

    Only the containers on the path to spans, links and exemplars are visited: attribute values
    (``bytesValue``) are base64 in OTLP/JSON too and must stay as they are.
    """
    if isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in _ID_FIELDS:
            if not isinstance(value, str):
                raise OtlpError(f"{key} must be a hex string, not {type(value).__name__}")
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise OtlpError(f"{key} is not a hex string: {value[:40]!r}") from None
            node[key] = base64.b64encode(raw).decode("ascii")
        elif key in _ID_CONTAINERS:
            _hex_ids_to_base64(value)


def parse_json(data: bytes | str | dict[str, Any], message_type: type[RequestT]) -> RequestT:
    """Decode an OTLP/JSON request (hex ids, camelCase or proto field names, enums as integers
    or names, unknown fields ignored); :class:`OtlpError` when it is malformed."""
    try:
        obj = json.loads(data) if isinstance(data, (bytes, str)) else data
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise OtlpError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise OtlpError(f"an OTLP/JSON request is a JSON object, not {type(obj).__name__}")
    _hex_ids_to_base64(obj)
    message = message_type()
    try:
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise OtlpError(f"malformed OTLP/JSON {message_type.__name__}: {exc}") from None
    return message


def to_json(message: Message) -> str:
    """Encode a request as one line of OTLP/JSON (hex ids), as the Collector's file exporter
    writes it."""
    # Attributes as OTLP/JSON writes them, not as bytes.
    if isinstance(message, SpansRequest):
        message = ExportTraceServiceRequest.FromString(message.SerializeToString())
    elif isinstance(message, MetricsRequest):
        message = ExportMetricsServiceRequest.FromString(message.SerializeToString())
    obj = json_format.MessageToDict(message)
    _base64_ids_to_hex(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _base64_ids_to_hex(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _base64_ids_to_hex(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            elif key in _ID_CONTAINERS:
                _base64_ids_to_hex(value)


# -- values ---------------------------------------------------------------------------------------


_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind in _SCALARS:
        return getattr(v, kind)
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()  # as literal() writes bytes
    return None


def _attrs(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # The hot loop of the conversion. upb's WhichOneof costs about three field reads, so the
    # two usual kinds are tried first: a non-empty string or a non-zero integer can only be the
    # value the oneof holds (an unset member reads as its default).
    for kv in kvs:
        v = kv.value
        text = v.string_value
        if text:
            out[kv.key] = text
            continue
        number = v.int_value
        if number:
            out[kv.key] = number
            continue
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind in _SCALARS else _value(v)
    return out


#: Encoded ``KeyValue`` -> (key, value), for attributes whose value is immutable (no arrays,
#: no maps). Bounded: emptied when full.
_ATTRIBUTE_CACHE: dict[bytes, tuple[str, Any]] = {}
_CACHE_ENTRIES = 8192
_CACHE_ENTRY_BYTES = 512


def _raw_attrs(raws: Iterable[bytes]) -> dict[str, Any]:
    """:func:`_attrs` of encoded ``KeyValue`` messages (:data:`SpansRequest`'s attributes)."""
    out: dict[str, Any] = {}
    cache = _ATTRIBUTE_CACHE
    for raw in raws:
        hit = cache.get(raw)
        if hit is None:
            try:
                kv = KeyValue.FromString(raw)
            except (DecodeError, RecursionError, ValueError) as exc:
                raise OtlpError(f"malformed protobuf KeyValue: {exc}") from None
            v = kv.value
            kind = v.WhichOneof("value")
            if kind not in _SCALARS and kind != "bytes_value" and kind is not None:
                out[kv.key] = _value(v)  # an array or a map: a new object every time
                continue
            hit = (kv.key, _value(v))
            if len(raw) <= _CACHE_ENTRY_BYTES:
                if len(cache) >= _CACHE_ENTRIES:
                    cache.clear()
                cache[raw] = hit
        out[hit[0]] = hit[1]
    return out


def attributes(kvs: Any) -> dict[str, Any]:
    """The attributes of an OTLP item as a dict, from ``KeyValue`` messages or from the
    encoded ones of :data:`SpansRequest` / :data:`MetricsRequest`."""
    return _raw_attrs(kvs) if len(kvs) and isinstance(kvs[0], bytes) else _attrs(kvs)


def _scope(scope: Any) -> dict[str, Any]:
    return {"name": scope.name, "version": scope.version or None}


# -- spans ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class SpanBatch:
    """Span records of one request, and what was rejected."""

    #: Span records in request order, each with its ``resource``.
    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    #: The first reason for a rejection, for the partial-success message.
    error: str = ""

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if not self.error:
            self.error = reason


def _ids_problem(trace_id: bytes, span_id: bytes, parent: bytes) -> str:
    if len(trace_id) != 16 or not any(trace_id):
        return "trace_id must be 16 bytes, not all zero"
    if len(span_id) != 8 or not any(span_id):
        return "span_id must be 8 bytes, not all zero"
    if parent and len(parent) != 8:
        return "parent_span_id must be empty or 8 bytes"
    return ""


def _step_arrays_problem(attributes: dict[str, Any]) -> str:
    for key, value in attributes.items():
        if type(value) is list and value and key.startswith(_STEP_PREFIX):
            numbers = all(isinstance(x, (int, float)) for x in value)
            if not numbers and not all(isinstance(x, str) for x in value):
                return f"{key}: a per-step array must hold numbers (or strings) only"
    return ""


def _events(events: Any) -> list[dict[str, Any]]:
    return [
        {"name": e.name, "time": e.time_unix_nano, "attributes": _attrs(e.attributes)}
        for e in events
    ]


def _links(links: Any) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "attributes": _attrs(link.attributes),
        }
        for link in links
    ]


_ZERO_SPAN_ID = bytes(8)


def convert_spans(request: ExportTraceServiceRequest | Message) -> SpanBatch:
    """Turn a trace request into span records (see :func:`records.span_record`).

    A span is checked before its attributes are converted, so a rejected span costs little;
    the trace id, shared by the spans of a request, is checked and converted once. ``request``
    is an ``ExportTraceServiceRequest`` or a :data:`SpansRequest`; :class:`OtlpError` for a
    malformed attribute of the latter."""
    batch = SpanBatch()
    append = batch.records.append
    trace_bytes, trace_hex = b"", ""
    span_attrs = _attrs if isinstance(request, ExportTraceServiceRequest) else _raw_attrs
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = _scope(ss.scope)
            for span in ss.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if (
                    trace_id != trace_bytes
                    or len(span_id) != 8
                    or span_id == _ZERO_SPAN_ID
                    or (parent and len(parent) != 8)
                ):
                    problem = _ids_problem(trace_id, span_id, parent)
                    if problem:
                        batch.reject(problem)
                        continue
                    trace_bytes, trace_hex = trace_id, trace_id.hex()
                if end and end < start:
                    batch.reject("end_time_unix_nano before start_time_unix_nano")
                    continue
                attributes = span_attrs(span.attributes)
                if list in map(type, attributes.values()):  # stops at the first array
                    problem = _step_arrays_problem(attributes)
                    if problem:
                        batch.reject(problem)
                        continue
                if span.HasField("status"):
                    status = span.status
                    code = _STATUSES.get(status.code, "UNSET")
                    description = status.message or None
                else:
                    code, description = "UNSET", None
                events, links = span.events, span.links
                append(
                    {
                        "trace_id": trace_hex,
                        "span_id": span_id.hex(),
                        "parent_span_id": parent.hex() if parent else None,
                        "parent_is_remote": bool(parent) and span.flags & _REMOTE == _REMOTE,
                        "name": span.name,
                        "kind": _KINDS.get(span.kind, "UNSPECIFIED"),
                        "start": start,
                        "end": end or None,
                        "status": code,
                        "status_description": description,
                        "attributes": attributes,
                        "events": _events(events) if events else [],
                        "links": _links(links) if links else [],
                        "scope": scope,
                        "resource": resource,
                    }
                )
    return batch


# -- spans checked, not converted (the receiver's hot path) ---------------------------------------


#: Encoded ``KeyValue`` attributes known to need nothing at ingest: valid, a scalar value, not
#: a per-step column or a logged value. Bounded: emptied when full.
_PLAIN: set[bytes] = set()
_LOG_PREFIX = "ml.log."
#: Largest payload journaled as it came (larger ones are converted at ingest): its base64 line
#: stays well under the journal's longest line.
MAX_RAW_PAYLOAD = 16 * 1024 * 1024


_NUMBERS = frozenset({"int_value", "double_value", "bool_value"})


def _plain(raws: list[bytes]) -> bool:
    """Whether encoded span attributes need nothing at ingest; :class:`OtlpError` for a
    malformed one (as :func:`convert_spans` would raise).

    Only the attributes not known plain yet are decoded (a span's step number or time is new
    every span; its names and kinds are not). Per-step columns (``ml.step.*`` holding a packed
    string or an array) and logged values (``ml.log.*``) become series rows when they arrive:
    a span holding one is not plain. Plain attributes are remembered (a bounded set)."""
    for raw in set(raws).difference(_PLAIN):
        try:
            kv = KeyValue.FromString(raw)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise OtlpError(f"malformed protobuf KeyValue: {exc}") from None
        key = kv.key
        if key.startswith(_LOG_PREFIX):
            return False
        kind = kv.value.WhichOneof("value")
        if kind in _NUMBERS:
            pass  # a number is never a column, whatever its name
        elif key.startswith(_STEP_PREFIX):
            return False
        elif kind not in _SCALARS and kind != "bytes_value":
            continue  # an array or a map: checked again when it comes again
        if len(raw) <= _CACHE_ENTRY_BYTES:
            if len(_PLAIN) >= _CACHE_ENTRIES:
                _PLAIN.clear()
            _PLAIN.add(raw)
    return True


@dataclass(slots=True)
class TraceSpans:
    """The spans of one trace in a request, checked but not converted: what the receiver
    journals (:meth:`RunStore.add_otlp_spans`)."""

    #: Hex trace id.
    trace_id: str
    #: An encoded ``TracesData`` holding exactly these spans.
    payload: bytes
    #: Attributes of the resources the spans came from, in ``payload``'s order.
    resources: list[dict[str, Any]]
    #: Those of ``resources`` that sent a root span (no parent, or a remote one).
    roots: list[dict[str, Any]]
    #: How many spans.
    spans: int
    #: The first span's attributes and resource (what names a new run).
    first: dict[str, Any]


@dataclass(slots=True)
class SpanScan:
    """A trace request checked as :func:`convert_spans` checks it, split by trace."""

    traces: list[TraceSpans] = field(default_factory=list)
    rejected: int = 0
    error: str = ""

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if not self.error:
            self.error = reason

    @property
    def spans(self) -> int:
        """Spans kept, over all traces."""
        return sum(t.spans for t in self.traces)


def _span_problem(span: Any) -> str:
    problem = _ids_problem(span.trace_id, span.span_id, span.parent_span_id)
    if problem:
        return problem
    end = span.end_time_unix_nano
    if end and end < span.start_time_unix_nano:
        return "end_time_unix_nano before start_time_unix_nano"
    return ""


def scan_spans(request: Message, raw: bytes | None = None) -> SpanScan | None:
    """Check a :data:`SpansRequest` (``raw``: its encoding, when at hand) without converting
    its spans, and split it by trace; None when its spans must be converted now
    (:func:`convert_spans`): per-step columns or logged values (series rows are written at
    ingest), a payload beyond :data:`MAX_RAW_PAYLOAD`, or another request type.

    The same spans are rejected, for the same first reason, as :func:`convert_spans` rejects,
    and a malformed attribute raises the same :class:`OtlpError`, so a request is refused or
    acknowledged exactly as before. A request of one trace with nothing rejected (an
    exporter's batch) is journaled as it came; otherwise each trace's spans are encoded anew.
    """
    if not isinstance(request, SpansRequest):
        return None
    scan = SpanScan()
    # One C call a span: a slice of upb's repeated bytes costs half of iterating it.
    plain = _PLAIN.issuperset
    first: dict[bytes, tuple[Any, int]] = {}  # trace -> its first span, its resource's index
    roots: list[tuple[bytes, int]] = []
    # Resources with a kept span, by index, converted once (never those without spans).
    resources: dict[int, dict[str, Any]] = {}
    kept = 0
    trace_bytes = named = b""
    for i, rs in enumerate(request.resource_spans):
        before = kept
        for ss in rs.scope_spans:
            for span in ss.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if (
                    trace_id != trace_bytes
                    or len(span_id) != 8
                    or span_id == _ZERO_SPAN_ID
                    or (parent and len(parent) != 8)
                ):
                    problem = _ids_problem(trace_id, span_id, parent)
                    if problem:
                        scan.reject(problem)
                        continue
                    trace_bytes = trace_id
                end = span.end_time_unix_nano
                if end and end < span.start_time_unix_nano:
                    scan.reject("end_time_unix_nano before start_time_unix_nano")
                    continue
                raws = span.attributes[:]
                if not plain(raws) and not _plain(raws):
                    return None
                if not parent or span.flags & _REMOTE == _REMOTE:
                    roots.append((trace_id, i))
                if trace_id != named:
                    named = trace_id
                    if trace_id not in first:
                        first[trace_id] = (span, i)
                kept += 1
        if kept > before:
            resources[i] = _attrs(rs.resource.attributes)
    if not kept:
        return scan
    if len(first) == 1 and not scan.rejected:
        (trace,) = first
        payload = raw if raw is not None else request.SerializeToString()
        if len(payload) > MAX_RAW_PAYLOAD:
            return None
        scan.traces.append(
            _trace_spans(trace, payload, list(resources), roots, resources, kept, first[trace])
        )  # fmt: skip
        return scan
    for trace, (payload, indexes, count) in _by_trace(request).items():
        if len(payload) > MAX_RAW_PAYLOAD:
            return None
        scan.traces.append(
            _trace_spans(trace, payload, indexes, roots, resources, count, first[trace])
        )  # fmt: skip
    return scan


def _trace_spans(
    trace: bytes,
    payload: bytes,
    used: list[int],
    roots: list[tuple[bytes, int]],
    resources: dict[int, dict[str, Any]],
    count: int,
    first: tuple[Any, int],
) -> TraceSpans:
    root_indexes = sorted({i for t, i in roots if t == trace})
    span, index = first
    return TraceSpans(
        trace_id=trace.hex(),
        payload=payload,
        resources=[resources[i] for i in used],
        roots=[resources[i] for i in root_indexes],
        spans=count,
        first={"attributes": _raw_attrs(span.attributes), "resource": resources[index]},
    )


def _by_trace(request: Message) -> dict[bytes, tuple[bytes, list[int], int]]:
    """Each trace's kept spans as a ``TracesData`` of their own (resources and scopes copied),
    encoded, with the indexes of the resources it holds and its span count."""
    out: dict[bytes, tuple[Message, list[int], list[int]]] = {}
    for i, rs in enumerate(request.resource_spans):
        for ss in rs.scope_spans:
            scopes: dict[bytes, Any] = {}  # trace -> this scope's copy in its request
            for span in ss.spans:
                if _span_problem(span):
                    continue
                trace = span.trace_id
                entry = out.get(trace)
                if entry is None:
                    entry = out[trace] = (SpansRequest(), [], [0])
                target = scopes.get(trace)
                if target is None:
                    message, indexes, _ = entry
                    if not indexes or indexes[-1] != i:
                        copy = message.resource_spans.add()
                        copy.resource.CopyFrom(rs.resource)
                        copy.schema_url = rs.schema_url
                        indexes.append(i)
                    target = scopes[trace] = message.resource_spans[-1].scope_spans.add()
                    target.scope.CopyFrom(ss.scope)
                    target.schema_url = ss.schema_url
                target.spans.add().CopyFrom(span)
                entry[2][0] += 1
    return {t: (m.SerializeToString(), ix, n[0]) for t, (m, ix, n) in out.items()}


# -- metrics --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ResourcePoints:
    """The metric point records of one resource in a request."""

    resource: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class MetricsBatch:
    """Metric point records of one request, grouped by resource, and what was rejected."""

    groups: list[ResourcePoints] = field(default_factory=list)
    rejected: int = 0
    error: str = ""

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected += n
        if not self.error:
            self.error = reason

    @property
    def points(self) -> list[dict[str, Any]]:
        """All point records, in request order."""
        return [p for g in self.groups for p in g.points]


def convert_metrics(request: ExportMetricsServiceRequest | Message) -> MetricsBatch:
    """Turn a metrics request into metric point records (see :func:`records.metric_points`);
    ``request`` is an ``ExportMetricsServiceRequest`` or a :data:`MetricsRequest`
    (:class:`OtlpError` for a malformed attribute of the latter)."""
    batch = MetricsBatch()
    point_attrs = _attrs if isinstance(request, ExportMetricsServiceRequest) else _raw_attrs
    for rm in request.resource_metrics:
        group = ResourcePoints(_attrs(rm.resource.attributes))
        append = group.points.append
        resource = group.resource
        for sm in rm.scope_metrics:
            scope = _scope(sm.scope)
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue  # a metric without data: nothing to keep, nothing to reject
                data = getattr(metric, kind)
                if kind == "summary":
                    batch.reject("summary metrics are not supported", len(data.data_points))
                    continue
                histogram = kind in ("histogram", "exponential_histogram")
                name, unit, description = metric.name, metric.unit, metric.description
                type_ = "exponentialhistogram" if kind == "exponential_histogram" else kind
                for point in data.data_points:
                    if point.flags & _NO_RECORDED_VALUE:
                        continue
                    record: dict[str, Any] = {
                        "resource": resource,
                        "scope": scope,
                        "name": name,
                        "unit": unit,
                        "description": description,
                        "type": type_,
                        "attributes": point_attrs(point.attributes),
                        "start": point.start_time_unix_nano or None,
                        "time": point.time_unix_nano,
                    }
                    if histogram:
                        if not point.HasField("sum") and point.count:
                            batch.reject("histogram points without a sum are not supported")
                            continue
                        record["count"] = point.count
                        record["sum"] = point.sum if point.HasField("sum") else 0.0
                        record["min"] = point.min if point.HasField("min") else None
                        record["max"] = point.max if point.HasField("max") else None
                    else:
                        # A non-zero member can only be the one the oneof holds (as for
                        # attributes: WhichOneof costs more than two reads).
                        value = point.as_double or point.as_int
                        if not value:
                            which = point.WhichOneof("value")
                            value = getattr(point, which) if which else None
                        record["value"] = value
                    append(record)
        if group.points:
            batch.groups.append(group)
    return batch
