"""The provtel configurator: sets up the OpenTelemetry SDK under ``opentelemetry-instrument``.

Without a configurator ``opentelemetry-instrument`` installs no SDK at all. This one is the SDK's
standard configurator (exporters from ``OTEL_*_EXPORTER``, resource detectors, samplers), so
provtel behaves like opentelemetry-distro with the PROV exporter as the default.
"""

from __future__ import annotations

from opentelemetry.sdk._configuration import _OTelSDKConfigurator


class ProvtelConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator, registered under the name ``provtel``."""
