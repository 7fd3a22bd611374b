"""The default name of a run: the script's file name, or ``OTEL_PYTHON_PROVTEL_RUN_NAME``.

A module of its own so that the resource detector can name the service without loading the
PROV exporter (a process configured for OTLP only never needs it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from provtel.exporter.environment_variables import OTEL_PYTHON_PROVTEL_RUN_NAME


def default_run_name() -> str:
    """The script's file name without extension (``python`` for ``-c`` or a REPL)."""
    name = os.environ.get(OTEL_PYTHON_PROVTEL_RUN_NAME)
    if name:
        return name
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    stem = Path(argv0).stem if argv0 not in ("-c", "-m", "-") else ""
    return stem or "python"
