"""The hardware a run used, as attributes: for a resource detector or a report.

The hardware instrumentors put the same description on the run span (they cannot add to the
resource: it is built before instrumentors load). A resource detector on the SDK side can call
:func:`hardware_description` to put it on the resource, hence on the PROV agent, too.
"""

from __future__ import annotations

from typing import Any

from provtel.instrumentation.hardware._common import BackendUnavailable
from provtel.instrumentation.hardware.gpu import gpu_description
from provtel.instrumentation.hardware.host import host_description
from provtel.instrumentation.hardware.nvml import NvmlBackend


def hardware_description(gpus: bool = True) -> dict[str, Any]:
    """Host CPU model, core counts and memory, and the job's NVIDIA GPUs (when ``gpus``).

    GPUs are listed as ``ml.hw.gpu.<index>.{id,model,vendor,driver_version,memory.limit,parent}``
    and ``ml.hw.gpu.count``; without NVML, ``ml.hw.gpu.count`` is absent.
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    attrs = host_description(psutil)
    if not gpus:
        return attrs
    backend = NvmlBackend()
    try:
        infos = backend.open()
    except BackendUnavailable:
        return attrs
    try:
        attrs.update(gpu_description(infos))
    finally:
        backend.close()
    return attrs
