"""Decoding OTLP requests in bounded memory, for both transports of ``provtel serve``.

A decoded protobuf message takes far more memory than its encoding: an empty ``Span`` is 2
bytes on the wire and about 170 bytes decoded, so one 4 MiB request of 2 million empty spans
would take ~340 MB at once (measured: 89 decoded bytes per wire byte; empty ``KeyValue``
attributes 27, empty data points 35, OTLP/JSON 25 before it becomes protobuf). Two measures
bound it in bytes:

* **Chunks.** A binary request larger than :data:`CHUNK_BYTES` is split at the wire level,
  without decoding it, into smaller requests of the same resource and scope, each with a slice
  of the spans (or of a metric's data points) of at most about :data:`CHUNK_BYTES`. Each chunk is
  decoded, converted and journaled before the next is decoded, so a request's decoded form is
  never in memory at once. A request that fits in one chunk (every exporter's default batch of
  512 spans is ~100 KiB) is decoded as it came.
* **A decode budget.** Each decode reserves its input's size times
  :data:`DECODED_BYTES_PER_WIRE_BYTE` (the worst case measured above, rounded up) from a
  :class:`DecodeBudget` shared by the HTTP and gRPC transports; a decode that does not fit waits
  until others have finished (one larger than the whole budget runs alone). So the transient
  memory of decoding is at most the budget (or one chunk's worst case), whatever the number of
  clients.

A split request is first decoded chunk by chunk only to check it (a malformed request is
refused whole, nothing kept, as before). The chunks are then journaled one after the other; if
a later chunk is refused (the receiver is full, the disk is full), the client is told to retry
the whole request, and the receiver remembers (by a digest of the request's bytes, for the last
:data:`REMEMBERED_SPLITS` such requests) how many of its chunks it journaled: the retry, the
same bytes, journals only the rest, so nothing arrives twice (a run finalised meanwhile is not
reopened by its own spans). Requests that fit one chunk are all-or-nothing as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from provtel.exporter.prov.otlp import (
    MetricsRequest,
    OtlpError,
    SpansRequest,
    parse_json,
    parse_protobuf,
)
from provtel.exporter.receiver.core import Receiver
from provtel.exporter.receiver.limits import CHUNK_BYTES, DECODE_BUDGET_BYTES

#: Worst-case decoded bytes per encoded byte (measured 89 for a request of empty spans).
DECODED_BYTES_PER_WIRE_BYTE = 96
#: Split requests refused part-way whose journaled chunks are remembered for their retry.
REMEMBERED_SPLITS = 64

# Where the repeated items are, as field numbers from the request down (opentelemetry-proto):
# ExportTraceServiceRequest.resource_spans(1) / ResourceSpans.scope_spans(2) /
# ScopeSpans.spans(2); ExportMetricsServiceRequest.resource_metrics(1) /
# ResourceMetrics.scope_metrics(2) / ScopeMetrics.metrics(2) / Metric.{gauge 5, sum 7,
# histogram 9, exponential_histogram 10, summary 11} / *.data_points(1).
_SPAN_PATH: tuple[frozenset[int], ...] = (frozenset({1}), frozenset({2}), frozenset({2}))
_POINT_PATH: tuple[frozenset[int], ...] = (
    frozenset({1}),
    frozenset({2}),
    frozenset({2}),
    frozenset({5, 7, 9, 10, 11}),
    frozenset({1}),
)


class DecodeBudget:
    """Worst-case decoded bytes of the decodes in progress, bounded; callers wait for room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = threading.Condition()

    @contextlib.contextmanager
    def hold(self, wire_bytes: int) -> Iterator[None]:
        """Reserve the worst case of decoding ``wire_bytes`` for the ``with`` block."""
        cost = min(self.limit, max(1, wire_bytes) * DECODED_BYTES_PER_WIRE_BYTE)
        with self._room:
            while self.used and self.used + cost > self.limit:
                self._room.wait()
            self.used += cost
        try:
            yield
        finally:
            with self._room:
                self.used -= cost
                self._room.notify_all()


# -- the wire format ------------------------------------------------------------------------------


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise OtlpError("malformed protobuf: truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, field start, value start, value end)`` of each field in a message; the
    value of a length-delimited field is its payload, of others the raw bytes."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(data, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, value_end = _varint(data, pos, end)
        elif wire_type == 1:
            value_end = pos + 8
        elif wire_type == 2:
            length, pos = _varint(data, pos, end)
            value_end = pos + length
        elif wire_type == 5:
            value_end = pos + 4
        else:
            raise OtlpError(f"malformed protobuf: wire type {wire_type}")
        if value_end > end or number == 0:
            raise OtlpError("malformed protobuf: a field runs past its message")
        yield number, field_start, pos, value_end
        pos = value_end


def _others(data: bytes, start: int, end: int, targets: frozenset[int]) -> bytes:
    """The fields of a message other than ``targets``, encoded."""
    return b"".join(
        data[field_start:value_end]
        for number, field_start, _, value_end in _fields(data, start, end)
        if number not in targets
    )


def _split(
    data: bytes, start: int, end: int, path: tuple[frozenset[int], ...], limit: int
) -> Iterator[bytes]:
    """Messages equivalent to ``data[start:end]`` restricted to slices of the items at
    ``path``: each holds every other field of each level and about ``limit`` bytes of items
    (at least one). Two passes over each level, no list of items: memory is the output."""
    others = _others(data, start, end, path[0])
    # A large resource (or scope) travels with every chunk: make chunks at least that large,
    # so that the copies together stay about the size of the request.
    limit = max(limit, len(others))
    group: list[bytes] = []
    size = 0
    if len(path) == 1:
        run_start = run_end = -1  # contiguous items are sliced once, not one by one
        for number, field_start, _, value_end in _fields(data, start, end):
            if number not in path[0]:
                continue
            if size and size + value_end - field_start > limit:
                group.append(data[run_start:run_end])
                yield others + b"".join(group)
                group, size, run_start = [], 0, -1
            if run_start < 0:
                run_start = field_start
            elif field_start != run_end:
                group.append(data[run_start:run_end])
                run_start = field_start
            run_end = value_end
            size += value_end - field_start
        if run_start >= 0:
            group.append(data[run_start:run_end])
        if group or not size:
            yield others + b"".join(group)
        return
    items = False
    for number, _, value_start, value_end in _fields(data, start, end):
        if number not in path[0]:
            continue
        items = True
        tag = _encode_varint(number << 3 | 2)
        for inner in _split(data, value_start, value_end, path[1:], limit):
            piece = tag + _encode_varint(len(inner)) + inner
            if size and size + len(piece) > limit:
                yield others + b"".join(group)
                group, size = [], 0
            group.append(piece)
            size += len(piece)
    if group or not items:
        yield others + b"".join(group)


def chunks(data: bytes, signal: str, limit: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Binary OTLP requests, each at most about ``limit`` bytes of items, that together hold
    what ``data`` (an ``Export{Trace,Metrics}ServiceRequest``) holds, in its order."""
    if len(data) <= limit:
        yield data
        return
    path = _SPAN_PATH if signal == "traces" else _POINT_PATH
    yield from _split(data, 0, len(data), path, limit)


# -- decode and export ----------------------------------------------------------------------------


def _merge(total: Any, part: Any, signal: str) -> None:
    if not part.HasField("partial_success"):
        return
    done, more = total.partial_success, part.partial_success
    if signal == "traces":
        done.rejected_spans += more.rejected_spans
    else:
        done.rejected_data_points += more.rejected_data_points
    if more.error_message and not done.error_message:
        done.error_message = more.error_message


class Ingest:
    """Decode a request in bounded memory and hand it to the :class:`Receiver`; what both
    transports call once a request's bytes are in."""

    def __init__(
        self,
        receiver: Receiver,
        decode_budget_bytes: int = DECODE_BUDGET_BYTES,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.receiver = receiver
        self.budget = DecodeBudget(decode_budget_bytes)
        self.chunk_bytes = chunk_bytes
        # digest of a split request refused part-way -> (chunks journaled, their response)
        self._partial: OrderedDict[bytes, tuple[int, Any]] = OrderedDict()
        self._partial_lock = threading.Lock()

    def export(self, signal: str, body: bytes, json_body: bool = False) -> Any:
        """Decode and journal an OTLP request (``signal``: ``traces`` or ``metrics``); return
        the response message. Raises :class:`OtlpError` (malformed; nothing kept) and
        :class:`~provtel.exporter.receiver.runs.Overloaded` (retry later)."""
        traces = signal == "traces"
        request_type: Any = ExportTraceServiceRequest if traces else ExportMetricsServiceRequest
        export = self.receiver.export_traces if traces else self.receiver.export_metrics
        if json_body:
            with self.budget.hold(len(body)):
                request = parse_json(body, request_type)
                del body
                return export(request)
        # Spans and points are decoded with their attributes left encoded (cheaper to
        # convert); a split request is checked with the full type first, attributes included.
        fast_type: Any = SpansRequest if traces else MetricsRequest
        total: Any = ExportTraceServiceResponse() if traces else ExportMetricsServiceResponse()
        if len(body) <= self.chunk_bytes:
            with self.budget.hold(len(body)):
                return self._export(signal, parse_protobuf(body, fast_type), body)
        else:
            # A split request is checked whole before any of it is journaled, so that a
            # malformed one is refused whole (400, nothing kept) as an unsplit one is. The
            # chunks together are about the size of the body.
            digest = hashlib.sha256(signal.encode() + body).digest()
            parts = list(chunks(body, signal, self.chunk_bytes))
            del body
            for part in parts:
                with self.budget.hold(len(part)):
                    parse_protobuf(part, request_type)
        with self._partial_lock:
            done, earlier = self._partial.pop(digest, (0, None))
        if earlier is not None:
            total.CopyFrom(earlier)  # what the chunks journaled before answered
        del parts[:done]
        while parts:
            part = parts.pop(0)
            try:
                with self.budget.hold(len(part)):
                    response = self._export(signal, parse_protobuf(part, fast_type), part)
            except BaseException:
                if done:  # journaled in part: the retry journals only the rest
                    with self._partial_lock:
                        self._partial[digest] = (done, total)
                        while len(self._partial) > REMEMBERED_SPLITS:
                            self._partial.popitem(last=False)
                raise
            _merge(total, response, signal)
            done += 1
        return total

    def _export(self, signal: str, request: Any, raw: bytes) -> Any:
        if signal == "traces":  # spans are journaled as they came: hand over their bytes
            return self.receiver.export_traces(request, raw)
        return self.receiver.export_metrics(request)
