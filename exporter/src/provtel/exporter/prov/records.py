"""SDK objects -> plain records, the one input format of the PROV mapping.

The exporter, the OTLP receiver, the file converter and journal recovery all hand the mapping
the same JSON-serialisable dicts:

span record::

    {"trace_id": hex32, "span_id": hex16, "parent_span_id": hex16 | None, "name": str,
     "kind": "INTERNAL", "start": ns, "end": ns, "status": "UNSET|OK|ERROR",
     "status_description": str | None, "attributes": {...}, "events": [...], "links": [...],
     "scope": {"name": str, "version": str | None}, "resource": {...}}

metric point record: see :func:`metric_points`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan


def _attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in attributes.items()}


def span_record(
    span: ReadableSpan, resources: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Convert a finished SDK span to a span record.

    ``resources`` (the spans of one export share it) maps a ``Resource`` object's id to its
    attributes already converted: one dict per resource, so the store digests each resource
    once per export, not once per span. The caller keeps the spans, hence the ids, alive."""
    ctx = span.get_span_context()
    parent = span.parent
    scope = span.instrumentation_scope
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else "0" * 32,
        "span_id": f"{ctx.span_id:016x}" if ctx else "0" * 16,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "parent_is_remote": bool(parent.is_remote) if parent else False,
        "name": span.name,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "attributes": _attrs(span.attributes),
        "events": [
            {"name": e.name, "time": e.timestamp, "attributes": _attrs(e.attributes)}
            for e in span.events
        ],
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": _attrs(link.attributes),
            }
            for link in span.links
        ],
        "scope": {"name": scope.name, "version": scope.version} if scope else None,
        "resource": _resource(span.resource, resources),
    }


def _resource(resource: Any, resources: dict[int, dict[str, Any]] | None) -> dict[str, Any]:
    if resources is None:
        return _attrs(resource.attributes)
    known = resources.get(id(resource))
    if known is None:
        known = resources[id(resource)] = _attrs(resource.attributes)
    return known


def metric_points(data: MetricsData) -> Iterator[dict[str, Any]]:
    """Flatten SDK metrics into one record per data point.

    Each record: ``resource``, ``scope``, ``name``, ``unit``, ``description``, ``type``
    (``sum``/``gauge``/``histogram``), ``attributes``, ``start``, ``time`` and either ``value``
    or the histogram fields ``count``/``sum``/``min``/``max``.
    """
    for rm in data.resource_metrics:
        resource = _attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            scope = {"name": sm.scope.name, "version": sm.scope.version}
            for metric in sm.metrics:
                kind = type(metric.data).__name__.lower()
                for point in metric.data.data_points:
                    record: dict[str, Any] = {
                        "resource": resource,
                        "scope": scope,
                        "name": metric.name,
                        "unit": metric.unit or "",
                        "description": metric.description or "",
                        "type": kind,
                        "attributes": _attrs(point.attributes),
                        "start": point.start_time_unix_nano,
                        "time": point.time_unix_nano,
                    }
                    if isinstance(point, NumberDataPoint):
                        record["value"] = point.value
                    elif isinstance(point, (HistogramDataPoint, ExponentialHistogramDataPoint)):
                        record.update(
                            count=point.count, sum=point.sum, min=point.min, max=point.max
                        )
                    yield record
