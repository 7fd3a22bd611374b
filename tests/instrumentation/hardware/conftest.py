"""Fixtures: a real SDK MeterProvider with an in-memory reader, and clean instrumentors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from provtel.instrumentation import activity
from provtel.instrumentation.hardware import (
    AmdSmiInstrumentor,
    HostInstrumentor,
    NvmlInstrumentor,
    RaplInstrumentor,
    _common,
)
from provtel.instrumentation.hardware._runtime import RUNTIME

INSTRUMENTORS = (NvmlInstrumentor, AmdSmiInstrumentor, RaplInstrumentor, HostInstrumentor)


class Metrics:
    """Points of the last collection, by metric name."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def collect(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points = out.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        points.append((dict(point.attributes or {}), point.value))
        return out


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.provider.shutdown()


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No sampling thread unless a test asks; every instrumentor undone; logs fresh."""
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL", "0")
    for name in (
        "CUDA_VISIBLE_DEVICES",
        "OTEL_PYTHON_PROVTEL_CARBON_REGION",
        "OTEL_PYTHON_PROVTEL_CARBON_INTENSITY",
        "OTEL_PYTHON_PROVTEL_PUE",
    ):
        monkeypatch.delenv(name, raising=False)
    _common._logged.clear()
    yield
    for cls in INSTRUMENTORS:
        if cls().is_instrumented_by_opentelemetry:
            cls().uninstrument()
    assert RUNTIME.components == ()
    assert not RUNTIME.sampler.running
    assert not any(type(lst).__name__ == "EnergyListener" for lst in activity._listeners)
