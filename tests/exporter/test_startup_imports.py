"""What an instrumented process loads before the script runs (the fixed cost of issue 9).

Every process started under ``opentelemetry-instrument`` pays for what provtel imports at
start-up (DataLoader workers started with spawn, torchrun's agent, a script that trains
nothing). Modules that only some runs use stay out of it until then: the upload client (only
with ``OTEL_PYTHON_PROVTEL_UPLOAD_URL``), ``pynvml`` on a machine without NVIDIA's library, the
``prov`` package and the report's optional dependencies.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

from tests.support import clean_env, run_instrumented

SCRIPT = """
import json, sys
json.dump(sorted(sys.modules), open("modules.json", "w"))
"""

#: Not needed by a process that neither uploads nor has an NVIDIA driver.
NOT_AT_START = (
    "provtel.exporter.upload",
    "urllib.request",
    "http.client",
    "prov",
    "jinja2",
    "matplotlib",
    "lxml",
    "rdflib",
)


def nvml_library_present() -> bool:
    """Whether NVIDIA's NVML library loads here (the test machine has none)."""
    if sys.platform.startswith("win"):
        return True
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def modules_at_start(tmp_path: Path, **env: str) -> set[str]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    result = run_instrumented(
        script,
        cwd=tmp_path,
        env=clean_env(OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(tmp_path / "prov"), **env),
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads((tmp_path / "modules.json").read_text()))


def test_a_default_start_loads_only_what_it_uses(tmp_path: Path) -> None:
    modules = modules_at_start(tmp_path)
    # provtel is set up: its distro, exporters, detector and instrumentors are loaded ...
    for name in (
        "provtel.exporter.distro",
        "provtel.exporter.prov.exporter",
        "provtel.exporter.resource",
        "provtel.instrumentation.hardware.host",
        "provtel.instrumentation.torch.instrumentor",
    ):
        assert name in modules, name
    # ... but nothing only some runs use
    assert not modules & set(NOT_AT_START), sorted(modules & set(NOT_AT_START))
    # NVML's Python binding is imported only where NVIDIA's library is
    assert ("pynvml" in modules) == nvml_library_present()
    assert "torch" not in modules  # imported by the script, hooked after it


def test_the_upload_client_loads_when_an_upload_is_configured(tmp_path: Path) -> None:
    # imported at start, not at exit: defining its dataclasses during interpreter
    # finalisation would lose a Ctrl-C's exit status (see report/summary.py)
    modules = modules_at_start(tmp_path, OTEL_PYTHON_PROVTEL_UPLOAD_URL="http://127.0.0.1:9")
    assert "provtel.exporter.upload" in modules
