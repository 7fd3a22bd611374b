"""``provtel export``: a document in another PROV serialisation, through the ``prov`` package."""

from __future__ import annotations

import warnings
from pathlib import Path

from provtel.exporter.prov.formats import FORMATS

#: Formats ``provtel export`` writes (``turtle`` is PROV-O; ``xml`` is PROV-XML).
EXPORT_FORMATS = {name: FORMATS[name] for name in ("provn", "turtle", "xml", "jsonld", "trig")}


def export_document(source: Path, fmt: str, target: Path | None = None) -> Path:
    """Write ``source`` (PROV-JSON) as ``fmt``; the target defaults to the document's name with
    the format's suffix, beside it."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(EXPORT_FORMATS))}")
    import prov

    prov_format, kwargs, suffix = EXPORT_FORMATS[fmt]
    out = target or source.with_suffix(suffix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document = prov.read(str(source), format="json")
        if document is None:
            raise ValueError(f"prov could not read {source}")
        try:
            document.serialize(str(out), format=prov_format, **kwargs)
        except ImportError as exc:
            extra = "xml" if fmt == "xml" else "rdf"
            raise ImportError(f"{fmt} needs provtel-exporter[{extra}] ({exc})") from exc
    return out
