"""OpenTelemetry spans and metrics -> W3C PROV documents (PROV-JSON, ProvML vocabulary)."""

from provtel.exporter.prov.exporter import ProvMetricExporter, ProvSpanExporter, RunSession

__all__ = ["ProvMetricExporter", "ProvSpanExporter", "RunSession"]
