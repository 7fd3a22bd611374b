"""The end-of-run summary: a short block on stderr naming the run folder and what happened.

Printed by the PROV exporter once a run's document is written (for a job, by the rank that
merges it), from the document alone. ``OTEL_PYTHON_PROVTEL_SUMMARY=false`` turns it off. It is
written straight to stderr rather than logged: it is output for the person who started the run,
and logging is usually not configured at exit. It never raises: a summary that cannot be made
is one logged line.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from provtel.exporter.environment_variables import OTEL_PYTHON_PROVTEL_SUMMARY

# Imported with the exporter, not at exit: defining dataclasses or namedtuples runs exec() of a
# string, and CPython forgets an unhandled KeyboardInterrupt when code runs that way during
# finalisation, so a Ctrl-C'd run would exit 1 instead of by SIGINT (-2).
from provtel.exporter.report.analysis import analyse
from provtel.exporter.report.document import load
from provtel.exporter.report.text import summary

logger = logging.getLogger(__name__)


def enabled() -> bool:
    """False when ``OTEL_PYTHON_PROVTEL_SUMMARY`` is ``false`` (or ``0``, ``no``, ``off``)."""
    text = os.environ.get(OTEL_PYTHON_PROVTEL_SUMMARY, "true").strip().lower()
    return text not in ("false", "0", "no", "off")


def summary_text(document: Path) -> str:
    """The summary block of a run's document."""
    return summary(analyse(load(document)))


def print_summary(document: Path, stream: TextIO | None = None) -> None:
    """Print the summary of ``document`` on stderr, unless turned off; never raises."""
    if not enabled():
        return
    try:
        text = summary_text(document)
        out = stream or sys.stderr
        out.write(text + "\n")
        out.flush()
    except Exception as exc:  # the run is over and its document written: never fail here
        logger.warning("provtel: no end-of-run summary for %s: %s", document, exc)
