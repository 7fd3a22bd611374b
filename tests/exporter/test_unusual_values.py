"""Unusual attribute and resource values always give a valid document, never a crash."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from provtel.exporter.prov import ProvSpanExporter
from provtel.exporter.prov.store import RunStore, create_run_dir
from provtel.exporter.prov.validate import assert_valid, validate_file

ODD = {
    "unicode ключ/鍵 ü": "значение 値 ✓ \U0001f600",
    "very.long": "x" * 200_000,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "huge": 2**62,
    "0starts-with-digit": True,
    "a:b c\td\ne": "line1\nline2\r\n\ttab",
    "control": "bell\x07 null\x00 esc\x1b",
    "empty": "",
    "floats": [0.1, math.nan, -0.0, 1e308],
    "strings": ["a", "", "ü", "a"],
    "ml.hparam.weird name/ü": math.inf,
    "ml.dataset.name": "data set with spaces/and:colons",
}


def _provider(tmp_path: Path, resource: dict[str, Any]) -> tuple[TracerProvider, ProvSpanExporter]:
    exporter = ProvSpanExporter(output_dir=tmp_path)
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_odd_values_through_the_sdk(tmp_path: Path) -> None:
    provider, _ = _provider(tmp_path, {"service.name": "odd ✓ name/x", "odd key!": "v\x01"})
    tracer = provider.get_tracer("odd scope ü", "1.0 beta")
    with tracer.start_as_current_span("run\nwith newline ✓", attributes={"ml.activity": "run"}):
        with tracer.start_as_current_span("child", attributes=ODD) as span:
            span.add_event("event ü", {"k": [1, 2, 3]})
            span.record_exception(ValueError("bad ✓ \x00"))
    provider.shutdown()
    (document,) = tmp_path.glob("*/prov.json")
    doc = assert_valid(document)
    child = next(a for a in doc["activity"].values() if a["prov:label"] == "child")
    assert child["otel:very.long"] == "x" * 200_000
    assert child["otel:nan"] == {"$": "NaN", "type": "xsd:double"}
    assert child["otel:huge"] == 2**62
    assert child["otel:strings"] == '["a", "", "ü", "a"]'  # order and repeats kept
    assert child["otel:exception.type"] == "ValueError"
    assert "\\u0000" in child["otel:control"]


def test_nested_arrays_and_maps_from_the_wire(tmp_path: Path) -> None:
    """OTLP can carry values the SDK cannot (nested arrays, maps, huge ints)."""
    run_dir = create_run_dir(tmp_path, "wire ✓")
    store = RunStore(run_dir)
    store.add_spans(
        [
            {
                "trace_id": "ab" * 16,
                "span_id": "cd" * 8,
                "parent_span_id": None,
                "name": "n",
                "kind": "SERVER",
                "start": 1,
                "end": 2,
                "status": "ERROR",
                "status_description": "ü",
                "attributes": {
                    "nested": [[1, [2]], {"k": [math.nan]}],
                    "map": {"a": {"b": None}},
                    "big": 2**80,
                    "ml.step.loss": [[1.0]],
                    "ml.step.first": "x",
                },
                "events": [],
                "links": [],
                "scope": None,
                "resource": {"service.name": ["not", "a", "string"], "process.owner": "ü s/er"},
            }
        ]
    )
    document = store.finalize()
    doc = assert_valid(document)
    (activity,) = doc["activity"].values()
    assert activity["otel:big"] == {"$": str(2**80), "type": "xsd:integer"}


_keys = st.text(min_size=0, max_size=30)
_scalars = st.one_of(
    st.text(max_size=50),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
_values = st.one_of(
    _scalars, st.lists(st.text(max_size=5), max_size=4), st.lists(st.floats(), max_size=4)
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    attributes=st.dictionaries(_keys, _values, max_size=8),
    resource=st.dictionaries(_keys, _scalars, max_size=4),
    name=st.text(max_size=40),
)
def test_any_attributes_give_a_valid_document(
    tmp_path_factory: Any, attributes: dict[str, Any], resource: dict[str, Any], name: str
) -> None:
    out = tmp_path_factory.mktemp("fuzz")
    provider, _ = _provider(out, resource)
    tracer = provider.get_tracer("fuzz")
    with tracer.start_as_current_span(name, attributes={**attributes, "ml.activity": "run"}):
        with tracer.start_as_current_span("child", attributes=attributes):
            pass
    provider.shutdown()
    (document,) = out.glob("*/prov.json")
    assert validate_file(document, round_trips=False) == []
