"""NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``).

Enabled by ``opentelemetry-instrument`` (entry point ``provtel_nvml``); disable it with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_nvml``. By hand::

    from provtel.instrumentation.hardware.nvml import NvmlInstrumentor
    NvmlInstrumentor().instrument()

What it records, for the GPUs of ``CUDA_VISIBLE_DEVICES`` only (ordinals or UUIDs, MIG
included; all GPUs when unset), with OpenTelemetry's ``hw.*`` conventions (``hw.id`` = GPU UUID,
``hw.type = gpu``):

=============================== =========== ==========================================
metric                          unit        NVML
=============================== =========== ==========================================
``hw.energy`` (counter)         J           ``nvmlDeviceGetTotalEnergyConsumption``
``hw.power``                    W           ``nvmlDeviceGetPowerUsage``
``hw.gpu.utilization``          1           ``nvmlDeviceGetUtilizationRates().gpu``
``hw.gpu.memory.usage``/``limit`` By        ``nvmlDeviceGetMemoryInfo``
``hw.temperature``              Cel         ``nvmlDeviceGetTemperatureV`` (or the old call)
``ml.hw.gpu.clock.speed``       Hz          ``nvmlDeviceGetClockInfo(SM)``
``hw.status``                   1           ``ok`` / ``failed`` (``GpuIsLost``)
``ml.process.gpu.memory.usage`` By          ``nvmlDeviceGetComputeRunningProcesses``
=============================== =========== ==========================================

The energy counter (Volta and newer) is also read at the start and end of every activity of the
PyTorch instrumentation (``ml.energy.gpu.<i>`` on run, pass and step-block spans, see
:mod:`provtel.instrumentation.hardware.energy`). Processes are enumerated at most every
``OTEL_PYTHON_PROVTEL_GPU_PROCESS_INTERVAL`` seconds (30): the call takes the driver's lock.
NVML reports host PIDs, so inside a container without the host's PID namespace the process's
own GPU memory is not found.

Missing pieces are reported once, with NVML's reason, never as zeros: no library or driver
(``unavailable: NVML: NVML Shared Library Not Found`` on the run span), a reading a GPU does not
support (``NotSupported``, ``FunctionNotFound``, ``NoPermission``: that reading is dropped for
that GPU), a lost GPU (``GpuIsLost``: no longer read, ``hw.status`` ``failed``). Integer entries
of ``CUDA_VISIBLE_DEVICES`` are NVML indices, which equal CUDA ordinals when
``CUDA_DEVICE_ORDER=PCI_BUS_ID``; use UUIDs to be sure.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import sys
import warnings
from typing import Any

from opentelemetry.metrics import Meter

from provtel.instrumentation.hardware._common import (
    BackendUnavailable,
    DeviceLost,
    ReadError,
    ReadingUnavailable,
    log_once,
)
from provtel.instrumentation.hardware._instrumentor import HardwareInstrumentor
from provtel.instrumentation.hardware.gpu import (
    GpuBackend,
    GpuInfo,
    GpuMonitor,
    parse_visible_devices,
)

logger = logging.getLogger(__name__)

_FROM_ENV = "\0from-env"
#: What pynvml loads on Linux, and its message when that fails (``NVMLError_LibraryNotFound``).
_LIBRARY = "libnvidia-ml.so.1"
_LIBRARY_NOT_FOUND = "NVML Shared Library Not Found"


def _library_missing() -> bool:
    """Whether NVIDIA's library cannot load, found without importing ``pynvml``.

    Importing the binding (5,000 lines) costs ~12 ms of every instrumented process's start;
    on a machine without the driver, the usual case for CPU jobs and DataLoader workers, it is
    not needed to know that there is nothing to read. Where ``pynvml`` is already imported (or
    on Windows, where it searches several places) it is asked itself.
    """
    if "pynvml" in sys.modules or sys.platform.startswith("win"):
        return False
    try:
        ctypes.CDLL(_LIBRARY)
    except OSError:
        return True
    return False


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _Device:
    __slots__ = ("handle", "is_mig", "parent")

    def __init__(self, handle: Any, parent: Any, is_mig: bool) -> None:
        self.handle = handle
        self.parent = parent
        self.is_mig = is_mig


class NvmlBackend(GpuBackend):
    """NVML through ``pynvml`` (nvidia-ml-py). Functions are looked up at call time."""

    source = "nvml"

    def __init__(self, visible_devices: str | None = _FROM_ENV) -> None:
        self._visible = (
            os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible_devices == _FROM_ENV
            else visible_devices
        )
        self._nvml: Any = None
        self._devices: list[_Device] = []
        self._temperature_v = True

    # -- errors ----------------------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        nv = self._nvml
        fn = getattr(nv, name, None)
        if fn is None:
            raise ReadingUnavailable(f"{name} is not in this nvidia-ml-py")
        try:
            return fn(*args)
        except nv.NVMLError as exc:
            raise self._translate(name, exc) from exc

    def _translate(self, name: str, exc: Exception) -> Exception:
        nv = self._nvml
        permanent = tuple(
            getattr(nv, cls)
            for cls in (
                "NVMLError_NotSupported",
                "NVMLError_FunctionNotFound",
                "NVMLError_NoPermission",
            )
            if hasattr(nv, cls)
        )
        lost = tuple(
            getattr(nv, cls)
            for cls in ("NVMLError_GpuIsLost", "NVMLError_ResetRequired")
            if hasattr(nv, cls)
        )
        if lost and isinstance(exc, lost):
            return DeviceLost(str(exc))
        if permanent and isinstance(exc, permanent):
            return ReadingUnavailable(f"{exc} ({name})")
        return ReadError(f"{exc} ({name})")

    # -- set-up ----------------------------------------------------------------------------------
    def open(self) -> list[GpuInfo]:
        if importlib.util.find_spec("pynvml") is not None and _library_missing():
            raise BackendUnavailable(_LIBRARY_NOT_FOUND)
        try:
            with warnings.catch_warnings():
                # The deprecated `pynvml` distribution makes any `import pynvml` warn, even when
                # nvidia-ml-py provides the module: not the user's concern during their run.
                warnings.simplefilter("ignore", FutureWarning)
                import pynvml
        except ImportError as exc:
            raise BackendUnavailable(
                "nvidia-ml-py is not installed (pip install 'provtel-instrumentation[nvidia]')"
            ) from exc
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise BackendUnavailable(str(exc)) from exc
        try:
            return self._discover()
        except (pynvml.NVMLError, ReadingUnavailable, ReadError, DeviceLost) as exc:
            self.close()
            raise BackendUnavailable(f"listing the GPUs failed: {exc}") from exc

    def _discover(self) -> list[GpuInfo]:
        nv = self._nvml
        try:
            driver: str | None = _text(nv.nvmlSystemGetDriverVersion())
        except nv.NVMLError:
            driver = None
        count = int(nv.nvmlDeviceGetCount())
        tokens = parse_visible_devices(self._visible)
        handles: list[Any] = []
        if tokens is None:
            handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        else:
            for token in tokens:
                handle = self._resolve(token, count)
                if handle is None:  # CUDA ignores everything after an invalid entry
                    log_once(
                        ("nvml-visible", self._visible),
                        logging.WARNING,
                        "provtel: CUDA_VISIBLE_DEVICES entry %r matches no GPU; "
                        "it and the entries after it are ignored",
                        token,
                    )
                    break
                handles.append(handle)
        gpus: list[GpuInfo] = []
        self._devices = []
        for index, handle in enumerate(handles):
            is_mig = self._is_mig(handle)
            parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle) if is_mig else handle
            try:
                memory: int | None = int(nv.nvmlDeviceGetMemoryInfo(handle).total)
            except nv.NVMLError:
                memory = None
            self._devices.append(_Device(handle, parent, is_mig))
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(nv.nvmlDeviceGetUUID(handle)),
                    model=_text(nv.nvmlDeviceGetName(handle)),
                    vendor="NVIDIA",
                    driver_version=driver,
                    memory_limit=memory,
                    parent_uuid=_text(nv.nvmlDeviceGetUUID(parent)) if is_mig else None,
                )
            )
        return gpus

    def _is_mig(self, handle: Any) -> bool:
        nv = self._nvml
        fn = getattr(nv, "nvmlDeviceIsMigDeviceHandle", None)
        if fn is None:
            return False
        try:
            return bool(fn(handle))
        except nv.NVMLError:
            return False

    def _resolve(self, token: str, count: int) -> Any:
        nv = self._nvml
        if token.isdigit():
            index = int(token)
            return nv.nvmlDeviceGetHandleByIndex(index) if index < count else None
        try:
            return nv.nvmlDeviceGetHandleByUUID(token)
        except nv.NVMLError:
            pass
        # CUDA accepts any unique prefix of a UUID.
        matches = [h for uuid, h in self._all_uuids(count) if uuid.startswith(token)]
        return matches[0] if len(matches) == 1 else None

    def _all_uuids(self, count: int) -> list[tuple[str, Any]]:
        nv = self._nvml
        found: list[tuple[str, Any]] = []
        for i in range(count):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            found.append((_text(nv.nvmlDeviceGetUUID(handle)), handle))
            try:
                slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))
            except (nv.NVMLError, AttributeError):
                continue
            for slot in range(slots):
                try:
                    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except nv.NVMLError:
                    continue
                found.append((_text(nv.nvmlDeviceGetUUID(mig)), mig))
        return found

    def close(self) -> None:
        if self._nvml is not None:
            nv, self._nvml = self._nvml, None
            with contextlib.suppress(nv.NVMLError):
                nv.nvmlShutdown()

    # -- readings --------------------------------------------------------------------------------
    def energy_mj(self, index: int) -> int:
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption", self._devices[index].parent))

    def power_w(self, index: int) -> float:
        return self._call("nvmlDeviceGetPowerUsage", self._devices[index].parent) / 1000.0

    def utilization(self, index: int) -> float:
        device = self._devices[index]
        if device.is_mig:
            raise ReadingUnavailable("NVML reports no utilisation for MIG slices")
        return self._call("nvmlDeviceGetUtilizationRates", device.handle).gpu / 100.0

    def memory_used(self, index: int) -> int:
        return int(self._call("nvmlDeviceGetMemoryInfo", self._devices[index].handle).used)

    def temperature_c(self, index: int) -> float:
        parent = self._devices[index].parent
        sensor = getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0)
        if self._temperature_v:
            try:
                return float(self._call("nvmlDeviceGetTemperatureV", parent, sensor))
            except ReadingUnavailable:
                # Older drivers lack the V call (FunctionNotFound); the old one still works.
                self._temperature_v = False
        return float(self._call("nvmlDeviceGetTemperature", parent, sensor))

    def sm_clock_hz(self, index: int) -> float:
        sm = getattr(self._nvml, "NVML_CLOCK_SM", 1)
        return self._call("nvmlDeviceGetClockInfo", self._devices[index].parent, sm) * 1e6

    def process_memory(self, index: int, pid: int) -> int | None:
        processes = self._call("nvmlDeviceGetComputeRunningProcesses", self._devices[index].handle)
        for process in processes:
            if process.pid == pid:
                used = process.usedGpuMemory
                if used is None:
                    raise ReadingUnavailable("NVML does not report per-process memory here")
                return int(used)
        return None


class NvmlInstrumentor(HardwareInstrumentor):
    """Records NVIDIA GPU readings and energy (see the module documentation).

    ``instrument(meter_provider=..., backend=...)``: ``backend`` replaces NVML (tests).
    """

    def _create(self, meter: Meter, **kwargs: Any) -> GpuMonitor:
        backend = kwargs.get("backend") or NvmlBackend()
        return GpuMonitor(backend, meter, process_interval_s=kwargs.get("process_interval_s"))
