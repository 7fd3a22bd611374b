"""provtel semantic conventions: the names shared by instrumentation and exporter.

Every attribute, span and metric name that the PROV exporter reads is defined once here and
listed, with its type, unit and meaning, in ``semconv/README.md``. OpenTelemetry's own
conventions are used where they exist (``file.*``, ``hw.*``, ``process.*``); ``ml.*`` names
cover what OpenTelemetry has no conventions for (training runs, passes, steps, checkpoints).
"""

from provtel.semconv import activities, attributes, hardware, metrics, spans
from provtel.semconv._registry import ATTRIBUTES, METRICS, SPAN_NAMES, Name

__all__ = [
    "ATTRIBUTES",
    "METRICS",
    "SPAN_NAMES",
    "Name",
    "activities",
    "attributes",
    "hardware",
    "metrics",
    "spans",
]
