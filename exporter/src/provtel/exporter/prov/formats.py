"""Other PROV serialisations, produced from ``prov.json`` with the ``prov`` package."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: name -> (prov format, serialize keyword arguments, file suffix)
FORMATS: dict[str, tuple[str, dict[str, Any], str]] = {
    "provn": ("provn", {}, ".provn"),
    "xml": ("xml", {}, ".xml"),
    "turtle": ("rdf", {"rdf_format": "turtle"}, ".ttl"),
    "trig": ("rdf", {"rdf_format": "trig"}, ".trig"),
    "jsonld": ("jsonld", {}, ".jsonld"),
}


def parse_formats(text: str | None) -> tuple[str, ...]:
    """Parse ``OTEL_PYTHON_PROVTEL_FORMATS``; unknown names are reported once and dropped."""
    names = [n.strip().lower() for n in (text or "json").split(",") if n.strip()]
    unknown = [n for n in names if n != "json" and n not in FORMATS]
    if unknown:
        logger.error(
            "provtel: unknown PROV format(s) %s in OTEL_PYTHON_PROVTEL_FORMATS; known: json, %s",
            ", ".join(unknown),
            ", ".join(FORMATS),
        )
    return tuple(dict.fromkeys(n for n in names if n == "json" or n in FORMATS))


def write_formats(json_path: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write each requested extra format beside ``json_path``; return the files written."""
    extra = [f for f in formats if f in FORMATS]
    if not extra:
        return []
    import prov  # deferred: only needed when extra formats are asked for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document = prov.read(str(json_path), format="json")
        if document is None:
            raise ValueError(f"prov could not read {json_path}")
        written = []
        for name in extra:
            fmt, kwargs, suffix = FORMATS[name]
            target = json_path.with_suffix(suffix)
            try:
                document.serialize(str(target), format=fmt, **kwargs)
            except ImportError as exc:
                logger.error(
                    "provtel: cannot write PROV %s (%s); install provtel-exporter[%s]",
                    name,
                    exc,
                    "xml" if name == "xml" else "rdf",
                )
                continue
            written.append(target)
    return written
