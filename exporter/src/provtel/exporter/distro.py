"""The provtel distro: zero-configuration defaults for ``opentelemetry-instrument``.

With provtel installed and no ``OTEL_*`` variables set, traces and metrics go to the PROV
exporter and nothing is sent over the network (so exit is never delayed by an absent
collector). When ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or a per-signal endpoint) is set, OTLP export
is added beside PROV. Every default is a ``setdefault``: a variable the user set always wins.
"""

from __future__ import annotations

import os

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPERIMENTAL_RESOURCE_DETECTORS,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_METRIC_EXPORT_INTERVAL,
)

#: Resource detectors run by default: host, OS and process identity plus provtel's own.
DEFAULT_RESOURCE_DETECTORS = "host,os,process,provtel"


def _exporters(signal_endpoint: str) -> str:
    if os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or os.environ.get(signal_endpoint):
        return "prov,otlp"
    return "prov"


class ProvtelDistro(BaseDistro):
    """Defaults: PROV export always, OTLP when an endpoint is configured."""

    def _configure(self, **kwargs: object) -> None:
        # The SDK's logs module builds a default Resource when it is imported (a class
        # attribute of ReadWriteLogRecord), running every configured resource detector, and the
        # configurator imports it just before building the real resource. Imported before our
        # detectors are chosen, that extra detection is the SDK's two built-in ones only.
        import opentelemetry.sdk._logs  # noqa: F401

        os.environ.setdefault(
            "OTEL_TRACES_EXPORTER", _exporters(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        )
        os.environ.setdefault(
            "OTEL_METRICS_EXPORTER", _exporters(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
        )
        has_otlp = bool(os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT))
        os.environ.setdefault("OTEL_LOGS_EXPORTER", "otlp" if has_otlp else "none")
        os.environ.setdefault(OTEL_EXPERIMENTAL_RESOURCE_DETECTORS, DEFAULT_RESOURCE_DETECTORS)
        # All ranks of a job share one trace, derived from the job identity (random otherwise).
        os.environ.setdefault("OTEL_PYTHON_ID_GENERATOR", "provtel")
        # Live dashboards want fresher points than the SDK's 60 s; PROV gets every point anyway.
        os.environ.setdefault(OTEL_METRIC_EXPORT_INTERVAL, "10000")
        # Provenance must be complete: a larger span queue than the SDK's 2048, and spans
        # journaled within half a second (the SDK waits 5 s), so a killed process loses little.
        os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", "65536")
        os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "500")
