"""Fake hardware for tests on CPU: a scripted GPU backend, a fake NVML driver, a RAPL tree."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

from provtel.instrumentation.hardware._common import (
    BackendUnavailable,
    DeviceLost,
    ReadingUnavailable,
)
from provtel.instrumentation.hardware.gpu import GpuBackend, GpuInfo


# -- a scripted backend (the GpuBackend interface) ----------------------------------------------
@dataclass
class FakeGpu:
    """One scripted GPU: set its fields, or ``fail`` a reading with an exception."""

    uuid: str
    model: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 0
    power_w: float = 100.0
    utilization: float = 0.5
    memory_used: int = 1 << 30
    memory_limit: int = 80 << 30
    temperature_c: float = 40.0
    sm_clock_hz: float = 1.98e9
    process_memory: int | None = 512 << 20
    parent_uuid: str | None = None
    fail: dict[str, Exception] = field(default_factory=dict)


class FakeGpuBackend(GpuBackend):
    """A :class:`GpuBackend` whose GPUs the test scripts (``FakeNvmlBackend`` in the issue)."""

    source = "nvml"

    def __init__(self, gpus: Iterable[FakeGpu] = (), unavailable: str | None = None) -> None:
        self.gpus = list(gpus)
        self.unavailable = unavailable
        self.calls: dict[str, int] = {}
        self.closed = False

    def _get(self, reading: str, index: int) -> Any:
        self.calls[reading] = self.calls.get(reading, 0) + 1
        gpu = self.gpus[index]
        if reading in gpu.fail:
            raise gpu.fail[reading]
        return getattr(gpu, reading)

    def open(self) -> list[GpuInfo]:
        if self.unavailable:
            raise BackendUnavailable(self.unavailable)
        return [
            GpuInfo(i, g.uuid, g.model, "NVIDIA", "575.57.08", g.memory_limit, g.parent_uuid)
            for i, g in enumerate(self.gpus)
        ]

    def close(self) -> None:
        self.closed = True

    def energy_mj(self, index: int) -> int:
        return int(self._get("energy_mj", index))

    def power_w(self, index: int) -> float:
        return float(self._get("power_w", index))

    def utilization(self, index: int) -> float:
        return float(self._get("utilization", index))

    def memory_used(self, index: int) -> int:
        return int(self._get("memory_used", index))

    def temperature_c(self, index: int) -> float:
        return float(self._get("temperature_c", index))

    def sm_clock_hz(self, index: int) -> float:
        return float(self._get("sm_clock_hz", index))

    def process_memory(self, index: int, pid: int) -> int | None:
        value = self._get("process_memory", index)
        return None if value is None else int(value)


def lost() -> DeviceLost:
    return DeviceLost("GPU is lost")


def not_supported(what: str = "Not Supported") -> ReadingUnavailable:
    return ReadingUnavailable(what)


# -- a fake NVML driver, patched into pynvml ------------------------------------------------------
@dataclass
class NvmlDevice:
    """One device as the fake driver sees it (a physical GPU or a MIG slice)."""

    uuid: str
    name: str = "NVIDIA A100-SXM4-40GB"
    energy_mj: int = 1_000_000
    power_mw: int = 250_000
    util: int = 87
    used: int = 3 << 30
    total: int = 40 << 30
    temperature: int = 55
    sm_mhz: int = 1410
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    parent: NvmlDevice | None = None
    migs: list[NvmlDevice] = field(default_factory=list)
    errors: dict[str, type[pynvml.NVMLError]] = field(default_factory=dict)


class FakeNvml:
    """The pynvml functions provtel calls, over scripted devices; ``patch()`` installs them."""

    def __init__(self, devices: list[NvmlDevice], init_error: type | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.calls: dict[str, int] = {}
        for device in devices:
            for mig in device.migs:
                mig.parent = device

    def _all(self) -> list[NvmlDevice]:
        return [d for dev in self.devices for d in (dev, *dev.migs)]

    def _check(self, name: str, device: NvmlDevice) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in device.errors:
            raise device.errors[name]()

    def functions(self) -> dict[str, Callable[..., Any]]:
        def nvmlInit() -> None:
            if self.init_error is not None:
                raise self.init_error()

        def by_uuid(uuid: str) -> NvmlDevice:
            for device in self._all():
                if device.uuid == uuid:
                    return device
            raise pynvml.NVMLError_NotFound()

        def by_index(index: int) -> NvmlDevice:
            if index >= len(self.devices):
                raise pynvml.NVMLError_InvalidArgument()
            return self.devices[index]

        def mig_by_index(device: NvmlDevice, slot: int) -> NvmlDevice:
            if slot >= len(device.migs):
                raise pynvml.NVMLError_NotFound()
            return device.migs[slot]

        def getter(name: str, value: Callable[[NvmlDevice], Any]) -> Callable[..., Any]:
            def fn(device: NvmlDevice, *args: Any) -> Any:
                self._check(name, device)
                return value(device)

            fn.__name__ = name
            return fn

        def processes(device: NvmlDevice) -> list[Any]:
            return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in device.processes]

        return {
            "nvmlInit": nvmlInit,
            "nvmlShutdown": lambda: None,
            "nvmlSystemGetDriverVersion": lambda: "575.57.08",
            "nvmlDeviceGetCount": lambda: len(self.devices),
            "nvmlDeviceGetHandleByIndex": by_index,
            "nvmlDeviceGetHandleByUUID": by_uuid,
            "nvmlDeviceGetUUID": lambda d: d.uuid.encode(),
            "nvmlDeviceGetName": lambda d: d.name,
            "nvmlDeviceIsMigDeviceHandle": lambda d: d.parent is not None,
            "nvmlDeviceGetDeviceHandleFromMigDeviceHandle": lambda d: d.parent,
            "nvmlDeviceGetMaxMigDeviceCount": lambda d: len(d.migs),
            "nvmlDeviceGetMigDeviceHandleByIndex": mig_by_index,
            "nvmlDeviceGetMemoryInfo": getter(
                "nvmlDeviceGetMemoryInfo", lambda d: SimpleNamespace(used=d.used, total=d.total)
            ),
            "nvmlDeviceGetTotalEnergyConsumption": getter(
                "nvmlDeviceGetTotalEnergyConsumption", lambda d: d.energy_mj
            ),
            "nvmlDeviceGetPowerUsage": getter("nvmlDeviceGetPowerUsage", lambda d: d.power_mw),
            "nvmlDeviceGetUtilizationRates": getter(
                "nvmlDeviceGetUtilizationRates", lambda d: SimpleNamespace(gpu=d.util, memory=10)
            ),
            "nvmlDeviceGetTemperatureV": getter(
                "nvmlDeviceGetTemperatureV", lambda d: d.temperature
            ),
            "nvmlDeviceGetTemperature": getter("nvmlDeviceGetTemperature", lambda d: d.temperature),
            "nvmlDeviceGetClockInfo": getter("nvmlDeviceGetClockInfo", lambda d: d.sm_mhz),
            "nvmlDeviceGetComputeRunningProcesses": getter(
                "nvmlDeviceGetComputeRunningProcesses", processes
            ),
        }


# -- a RAPL powercap tree ------------------------------------------------------------------------
def write_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int | None) -> Path:
    """Create ``root/zone`` with ``name``, ``energy_uj`` and ``max_energy_range_uj``."""
    path = root / zone
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def rapl_tree(root: Path, max_uj: int = 262_143_328_850) -> Path:
    """A two-socket server: packages, their DRAM, core/uncore, psys and an MMIO duplicate."""
    write_zone(root, "intel-rapl:0", "package-0", 1_000_000, max_uj)
    write_zone(root, "intel-rapl:0:0", "core", 500_000, max_uj)
    write_zone(root, "intel-rapl:0:1", "uncore", 100_000, max_uj)
    write_zone(root, "intel-rapl:0:2", "dram", 200_000, max_uj)
    write_zone(root, "intel-rapl:1", "package-1", 3_000_000, max_uj)
    write_zone(root, "intel-rapl:1:0", "dram", 400_000, max_uj)
    write_zone(root, "intel-rapl:2", "psys", 9_000_000, max_uj)
    write_zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000, max_uj)
    (root / "intel-rapl").mkdir()  # the control type directory
    return root


def set_energy(root: Path, zone: str, energy_uj: int) -> None:
    """Move a zone's counter."""
    (root / zone / "energy_uj").write_text(f"{energy_uj}\n")
