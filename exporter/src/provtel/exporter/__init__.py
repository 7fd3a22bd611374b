"""provtel-exporter: the OpenTelemetry SDK side of provtel.

It holds the PROV exporter (spans and metrics of a run become a W3C PROV document, ProvML
vocabulary), the distro and configurator that make ``opentelemetry-instrument`` work with no
configuration, and the ``provtel`` command line.
"""
