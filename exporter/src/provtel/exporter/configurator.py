"""The provtel configurator: sets up the OpenTelemetry SDK under ``opentelemetry-instrument``.

Without a configurator ``opentelemetry-instrument`` installs no SDK at all. This one is the SDK's
standard configurator (exporters from ``OTEL_*_EXPORTER``, resource detectors, samplers), so
provtel behaves like opentelemetry-distro with the PROV exporter as the default; in addition it
makes SIGTERM and SIGHUP unwind the program (:mod:`provtel.exporter.signals`) so that a job
stopped by its scheduler still leaves its document.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from provtel.exporter import signals


class ProvtelConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator, registered under the name ``provtel``, plus signal handling."""

    def _configure(self, **kwargs: Any) -> None:
        super()._configure(**kwargs)
        signals.install()
