"""AMD GPUs through AMD SMI (the ``amdsmi`` Python package of ROCm >= 6).

Enabled by ``opentelemetry-instrument`` (entry point ``provtel_amdsmi``) when ``amdsmi`` is
installed; it does nothing otherwise. Disable it with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_amdsmi``.

It records the same ``hw.*`` metrics as :mod:`provtel.instrumentation.hardware.nvml` for the
GPUs of ``ROCR_VISIBLE_DEVICES`` / ``HIP_VISIBLE_DEVICES`` / ``CUDA_VISIBLE_DEVICES`` (the first
set; ordinals or UUIDs), with energy from ``amdsmi_get_energy_count`` (accumulator x
resolution, µJ) and the same per-activity energy (``ml.energy.gpu.<i>``). Readings a GPU does
not support are reported once as unavailable. On a machine with both NVIDIA and AMD GPUs,
disable the instrumentor of the GPUs the job does not use: both name their GPUs ``gpu.<i>``.
Tested only against a fake ``amdsmi``.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

from opentelemetry.metrics import Meter

from provtel.instrumentation.hardware._common import (
    BackendUnavailable,
    ReadError,
    ReadingUnavailable,
)
from provtel.instrumentation.hardware._instrumentor import HardwareInstrumentor
from provtel.instrumentation.hardware.gpu import GpuBackend, GpuInfo, GpuMonitor

_VISIBLE = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
# AMD SMI status codes that mean "this reading is not there for good" (amdsmi_wrapper).
_PERMANENT = {2, 3, 10}  # NOT_SUPPORTED, NOT_YET_IMPLEMENTED, NO_PERM


def import_amdsmi() -> Any:
    """``amdsmi``, or None when it is not installed or cannot load its library."""
    try:
        # amdsmi prints to stdout when libamd_smi.so is missing.
        with contextlib.redirect_stdout(io.StringIO()):
            import amdsmi
    except Exception:  # ImportError, OSError, KeyError...: all mean "not usable"
        return None
    return amdsmi


def _visible_tokens() -> list[str] | None:
    for name in _VISIBLE:
        value = os.environ.get(name)
        if value is not None:
            return [t.strip() for t in value.split(",") if t.strip()]
    return None


class AmdSmiBackend(GpuBackend):
    """AMD SMI through its Python package."""

    source = "amdsmi"

    def __init__(self, module: Any = None) -> None:
        self._smi = module
        self._handles: list[Any] = []

    def _call(self, name: str, *args: Any) -> Any:
        smi = self._smi
        fn = getattr(smi, name, None)
        if fn is None:
            raise ReadingUnavailable(f"{name} is not in this amdsmi")
        try:
            return fn(*args)
        except smi.AmdSmiException as exc:
            code = getattr(exc, "err_code", None)
            if code is None and hasattr(exc, "get_error_code"):
                code = exc.get_error_code()
            if code in _PERMANENT:
                raise ReadingUnavailable(f"{exc} ({name})") from exc
            raise ReadError(f"{exc} ({name})") from exc

    def open(self) -> list[GpuInfo]:
        smi = self._smi or import_amdsmi()
        if smi is None:
            raise BackendUnavailable("amdsmi is not installed or cannot load libamd_smi")
        self._smi = smi
        try:
            smi.amdsmi_init()
            handles = list(smi.amdsmi_get_processor_handles())
        except smi.AmdSmiException as exc:
            raise BackendUnavailable(f"amdsmi_init failed: {exc}") from exc
        uuids = [self._uuid(h) for h in handles]
        tokens = _visible_tokens()
        if tokens is not None:
            chosen = []
            for token in tokens:
                if token.isdigit() and int(token) < len(handles):
                    chosen.append(handles[int(token)])
                elif token in uuids:
                    chosen.append(handles[uuids.index(token)])
                else:
                    break
            handles = chosen
        self._handles = handles
        gpus = []
        for index, handle in enumerate(handles):
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=self._uuid(handle),
                    model=str(self._optional("amdsmi_get_gpu_asic_info", handle, "market_name")),
                    vendor="AMD",
                    driver_version=self._optional(
                        "amdsmi_get_gpu_driver_info", handle, "driver_version"
                    ),
                    memory_limit=self._memory("amdsmi_get_gpu_memory_total", handle),
                )
            )
        return gpus

    def _uuid(self, handle: Any) -> str:
        try:
            return str(self._call("amdsmi_get_gpu_device_uuid", handle))
        except (ReadingUnavailable, ReadError):
            return f"amdgpu-{self._call('amdsmi_get_gpu_device_bdf', handle)}"

    def _optional(self, name: str, handle: Any, key: str) -> Any:
        try:
            return self._call(name, handle).get(key)
        except (ReadingUnavailable, ReadError, AttributeError):
            return None

    def _memory(self, name: str, handle: Any) -> int | None:
        vram = getattr(getattr(self._smi, "AmdSmiMemoryType", None), "VRAM", 0)
        try:
            return int(self._call(name, handle, vram))
        except (ReadingUnavailable, ReadError):
            return None

    def close(self) -> None:
        if self._smi is not None:
            with contextlib.suppress(Exception):
                self._smi.amdsmi_shut_down()

    def energy_mj(self, index: int) -> int:
        info = self._call("amdsmi_get_energy_count", self._handles[index])
        count = info.get("energy_accumulator", info.get("power"))  # "power" before amdsmi 6.2.1
        if count is None:
            raise ReadingUnavailable("amdsmi_get_energy_count returned no accumulator")
        return int(count * info["counter_resolution"] / 1000)  # µJ -> mJ

    def power_w(self, index: int) -> float:
        info = self._call("amdsmi_get_power_info", self._handles[index])
        for key in ("current_socket_power", "average_socket_power"):
            value = info.get(key)
            if isinstance(value, (int, float)):
                return float(value)
        raise ReadingUnavailable("amdsmi_get_power_info reports no socket power")

    def utilization(self, index: int) -> float:
        activity = self._call("amdsmi_get_gpu_activity", self._handles[index])
        value = activity.get("gfx_activity")
        if not isinstance(value, (int, float)):
            raise ReadingUnavailable("amdsmi_get_gpu_activity reports no gfx_activity")
        return float(value) / 100.0

    def memory_used(self, index: int) -> int:
        vram = getattr(getattr(self._smi, "AmdSmiMemoryType", None), "VRAM", 0)
        return int(self._call("amdsmi_get_gpu_memory_usage", self._handles[index], vram))

    def temperature_c(self, index: int) -> float:
        smi = self._smi
        sensor = getattr(getattr(smi, "AmdSmiTemperatureType", None), "EDGE", 0)
        metric = getattr(getattr(smi, "AmdSmiTemperatureMetric", None), "CURRENT", 0)
        return float(self._call("amdsmi_get_temp_metric", self._handles[index], sensor, metric))

    def sm_clock_hz(self, index: int) -> float:
        gfx = getattr(getattr(self._smi, "AmdSmiClkType", None), "GFX", 0)
        info = self._call("amdsmi_get_clock_info", self._handles[index], gfx)
        value = info.get("clk", info.get("cur_clk"))
        if not isinstance(value, (int, float)):
            raise ReadingUnavailable("amdsmi_get_clock_info reports no current clock")
        return float(value) * 1e6

    def process_memory(self, index: int, pid: int) -> int | None:
        for process in self._call("amdsmi_get_gpu_process_list", self._handles[index]):
            if isinstance(process, dict) and process.get("pid") == pid:
                memory = process.get("memory_usage", {}).get("vram_mem")
                if memory is None:
                    raise ReadingUnavailable("amdsmi reports no per-process VRAM")
                return int(memory)
        return None


class AmdSmiInstrumentor(HardwareInstrumentor):
    """Records AMD GPU readings and energy when ``amdsmi`` is installed."""

    def _create(self, meter: Meter, **kwargs: Any) -> GpuMonitor | None:
        module = kwargs.get("amdsmi") or import_amdsmi()
        if module is None:
            return None  # no AMD software stack: nothing to report, not even "unavailable"
        return GpuMonitor(AmdSmiBackend(module), meter)
