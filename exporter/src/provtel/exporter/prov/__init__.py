"""OpenTelemetry spans and metrics -> W3C PROV documents (PROV-JSON, ProvML vocabulary)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provtel.exporter.prov.exporter import ProvMetricExporter, ProvSpanExporter, RunSession

_EXPORTER = ("ProvMetricExporter", "ProvSpanExporter", "RunSession")


def __getattr__(name: str) -> Any:
    """The exporters, imported on first use (PEP 562): the command line's validate, report and
    convert need neither them nor the OpenTelemetry SDK they import."""
    if name not in _EXPORTER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from provtel.exporter.prov import exporter

    value = getattr(exporter, name)
    globals()[name] = value
    return value


__all__ = ["ProvMetricExporter", "ProvSpanExporter", "RunSession"]
