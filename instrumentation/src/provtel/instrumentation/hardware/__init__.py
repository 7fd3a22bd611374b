"""Hardware readings for training runs: GPUs, CPU and DRAM energy, process and system, carbon.

Four instrumentors, each an ``opentelemetry-instrument`` entry point that
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` can switch off:

==================== ================================================ =========================
entry point          what                                             module
==================== ================================================ =========================
``provtel_nvml``     NVIDIA GPUs through NVML (nvidia-ml-py)          :mod:`.nvml`
``provtel_amdsmi``   AMD GPUs through AMD SMI, when installed         :mod:`.amd`
``provtel_rapl``     CPU package and DRAM energy from RAPL (powercap)  :mod:`.rapl`
``provtel_host``     process and system CPU and memory (psutil)       :mod:`.host`
==================== ================================================ =========================

All speak only the OpenTelemetry API and use its semantic conventions (``hw.*``, ``process.*``,
``system.*``); provtel's own names (``ml.*``) are in :mod:`provtel.semconv.hardware`. Readings
are observable instruments collected on the SDK's metric reader thread; energy counters are
also read by one daemon thread (:mod:`._runtime`) and at the boundaries of the activities the
PyTorch instrumentation reports (:mod:`.energy`), which puts the energy of the run, each pass
and each step block on their spans, and the carbon estimate (:mod:`.carbon`) and the hardware
description on the run. A reading that is not available is reported once, with its reason, on
the run span (``ml.energy.gpu.status``, ``ml.hw.unavailable``): never as zero, never replaced
by an estimate.

Configuration: :mod:`.environment_variables`. User documentation: ``docs/energy.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provtel.instrumentation.hardware.amd import AmdSmiInstrumentor
    from provtel.instrumentation.hardware.host import HostInstrumentor
    from provtel.instrumentation.hardware.nvml import NvmlInstrumentor
    from provtel.instrumentation.hardware.rapl import RaplInstrumentor

__all__ = ["AmdSmiInstrumentor", "HostInstrumentor", "NvmlInstrumentor", "RaplInstrumentor"]

# Imported on first use: ``opentelemetry-instrument`` imports this package in its launcher
# process only to read ``environment_variables`` (for its command-line flags), and each
# instrumentor module is imported by its own entry point.
_MODULES = {
    "AmdSmiInstrumentor": "amd",
    "HostInstrumentor": "host",
    "NvmlInstrumentor": "nvml",
    "RaplInstrumentor": "rapl",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
