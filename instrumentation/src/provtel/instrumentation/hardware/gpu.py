"""GPUs, whatever the vendor: one small backend interface and the monitor built on it.

A :class:`GpuBackend` (NVML, AMD SMI, or a fake in tests) opens the job's GPUs and answers a
handful of readings per device, raising :class:`ReadingUnavailable` (this reading, for good),
:class:`DeviceLost` (this device, for good) or :class:`ReadError` (try again later).
:class:`GpuMonitor` turns that into OpenTelemetry observable instruments with the ``hw.*``
conventions, cumulative energy counters corrected for resets, and the run's hardware
description; every missing reading is recorded once with its reason, never as a zero.

MIG: a slice has its own memory but power, energy, temperature and clocks exist only for the
physical GPU, and utilisation not at all. Those readings are reported once per physical GPU with
its UUID as ``hw.id``; slices carry ``hw.parent``. The energy of a physical GPU is counted once
however many of its slices the job uses, and marked ``shared``: it is not split between slices.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from provtel.instrumentation.hardware import _runtime
from provtel.instrumentation.hardware._common import (
    UNAVAILABLE,
    BackendUnavailable,
    CumulativeCounter,
    DeviceLost,
    EnergyDevice,
    ReadError,
    ReadingUnavailable,
    env_float,
    log_once,
)
from provtel.instrumentation.hardware.carbon import create_emissions_counter
from provtel.instrumentation.hardware.environment_variables import (
    OTEL_PYTHON_PROVTEL_GPU_PROCESS_INTERVAL,
)
from provtel.semconv import hardware as hw

logger = logging.getLogger(__name__)

DEFAULT_PROCESS_INTERVAL_S = 30.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU the job uses."""

    index: int  # ordinal in the job (``cuda:<index>``)
    uuid: str  # ``hw.id``
    model: str
    vendor: str
    driver_version: str | None = None
    memory_limit: int | None = None  # bytes (of the slice, for MIG)
    parent_uuid: str | None = None  # the physical GPU of a MIG slice

    @property
    def physical_uuid(self) -> str:
        """The GPU whose power, energy, temperature and clock the readings describe."""
        return self.parent_uuid or self.uuid


class GpuBackend(ABC):
    """The readings provtel needs from a GPU library (Zeus style: small and vendor-specific)."""

    #: ``nvml``, ``amdsmi``: names the method (``counter:<source>``) and the logs.
    source: str = "gpu"

    @abstractmethod
    def open(self) -> list[GpuInfo]:
        """Initialise the library and return the job's GPUs; raise BackendUnavailable."""

    @abstractmethod
    def close(self) -> None:
        """Release the library."""

    @abstractmethod
    def energy_mj(self, index: int) -> int:
        """Cumulative energy counter of the (physical) GPU, in mJ."""

    @abstractmethod
    def power_w(self, index: int) -> float:
        """Power drawn by the (physical) GPU, in W."""

    @abstractmethod
    def utilization(self, index: int) -> float:
        """Share of the last sample period with a kernel running, 0..1."""

    @abstractmethod
    def memory_used(self, index: int) -> int:
        """Memory in use on the GPU (or MIG slice), in bytes."""

    @abstractmethod
    def temperature_c(self, index: int) -> float:
        """Temperature of the (physical) GPU, in °C."""

    @abstractmethod
    def sm_clock_hz(self, index: int) -> float:
        """Current SM (graphics) clock of the (physical) GPU, in Hz."""

    @abstractmethod
    def process_memory(self, index: int, pid: int) -> int | None:
        """GPU memory used by process ``pid`` (host PID), in bytes; None if not on this GPU."""


def parse_visible_devices(value: str | None) -> list[str] | None:
    """The job's devices from ``CUDA_VISIBLE_DEVICES``: None for all, else the tokens.

    As in CUDA, the list ends at the first invalid entry (``-1`` hides every GPU); tokens are
    ordinals, or UUIDs (``GPU-…``, ``MIG-…``, unique prefixes allowed).
    """
    if value is None:
        return None
    tokens: list[str] = []
    for raw in value.split(","):
        token = raw.strip()
        if not token:
            break
        if token.isdigit() or token.upper().startswith(("GPU-", "MIG-")):
            tokens.append(token)
        else:
            break
    return tokens


def gpu_description(gpus: Iterable[GpuInfo]) -> dict[str, Any]:
    """``ml.hw.gpu.count`` and ``ml.hw.gpu.<index>.*`` for the job's GPUs."""
    infos = list(gpus)
    attrs: dict[str, Any] = {hw.ML_HW_GPU_COUNT: len(infos)}
    for info in infos:
        prefix = f"ml.hw.gpu.{info.index}."
        attrs[prefix + "id"] = info.uuid
        attrs[prefix + "model"] = info.model
        attrs[prefix + "vendor"] = info.vendor
        if info.driver_version:
            attrs[prefix + "driver_version"] = info.driver_version
        if info.memory_limit is not None:
            attrs[prefix + "memory.limit"] = info.memory_limit
        if info.parent_uuid:
            attrs[prefix + "parent"] = info.parent_uuid
    return attrs


class _Unavailable:
    """Readings that are missing, each recorded once with its reason."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._lock = threading.Lock()
        self.items: dict[tuple[str, str], str] = {}

    def add(self, reading: str, device: str, reason: str) -> None:
        with self._lock:
            if (reading, device) in self.items:
                return
            self.items[(reading, device)] = reason
        log_once(
            (self.source, reading, device),
            logging.INFO,
            "provtel: %s %s unavailable (%s): %s",
            reading,
            device,
            self.source,
            reason,
        )

    def has(self, reading: str, device: str) -> bool:
        return (reading, device) in self.items

    def lines(self) -> list[str]:
        return [f"{r} {d}: {reason}" for (r, d), reason in self.items.items()]


class GpuEnergy:
    """The cumulative energy counters of the physical GPUs (an ``EnergySource``)."""

    def __init__(self, monitor: GpuMonitor, owners: list[tuple[int, GpuInfo, str | None]]) -> None:
        self._monitor = monitor
        self._indices = [index for index, _, _ in owners]
        self.devices = tuple(
            EnergyDevice(f"gpu.{info.index}", "gpu", info.physical_uuid, monitor.method, note)
            for _, info, note in owners
        )
        self._counters = [CumulativeCounter() for _ in owners]
        self._last: list[float | None] = [None] * len(owners)
        self._lock = threading.Lock()

    def read_energy(self) -> tuple[float | None, ...]:
        """J used by each physical GPU since instrumentation; None once unavailable."""
        out: list[float | None] = []
        with self._lock:
            for n, index in enumerate(self._indices):
                raw = self._monitor.read(hw.HW_ENERGY, index, self._monitor.backend.energy_mj)
                if raw is None:
                    out.append(None)
                    continue
                counter = self._counters[n]
                resets = counter.resets
                joules = counter.update(int(raw)) / 1000.0
                if counter.resets != resets:
                    log_once(
                        ("gpu-reset", self._monitor.backend.source, index),
                        logging.INFO,
                        "provtel: the energy counter of GPU %s restarted (driver reload or GPU "
                        "reset); energy since then is counted, energy before the next read lost",
                        self.devices[n].hw_id,
                    )
                self._last[n] = joules
                out.append(joules)
        return tuple(out)

    def last_energy(self, index: int) -> float | None:
        """The last total read for device ``index``."""
        return self._last[index]

    def failure(self, index: int) -> str | None:
        """Why the energy of device ``index`` is unavailable now."""
        return self._monitor.failure(self._indices[index], hw.HW_ENERGY)


class GpuMonitor:
    """The GPUs of one backend: instruments, energy source, run description."""

    def __init__(
        self,
        backend: GpuBackend,
        meter: Meter | None,
        *,
        process_interval_s: float | None = None,
    ) -> None:
        self.backend = backend
        self.method = f"counter:{backend.source}"
        self.label = backend.source.upper() if backend.source == "nvml" else backend.source
        self.gpus: list[GpuInfo] = []
        self.reason: str | None = None  # why the whole backend is unavailable
        self.energy: GpuEnergy | None = None
        self._physical: list[tuple[int, GpuInfo]] = []  # one (job index, info) per physical GPU
        self._missing = _Unavailable(backend.source)
        self._lost: dict[int, str] = {}
        self._lost_lock = threading.Lock()
        self._enabled = True
        self._pid = os.getpid()
        self._process_interval_s = (
            process_interval_s
            if process_interval_s is not None
            else env_float(OTEL_PYTHON_PROVTEL_GPU_PROCESS_INTERVAL, DEFAULT_PROCESS_INTERVAL_S)
        )
        self._process_next = 0.0
        self._process_cache: dict[int, int] = {}
        self.process_enumerations = 0
        self._opened = False
        self._open()
        if meter is not None:
            self._create_instruments(meter)

    # -- set-up ----------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            self.gpus = self.backend.open()
        except BackendUnavailable as exc:
            self.reason = str(exc)
            log_once(
                ("gpu-backend", self.backend.source, self.reason),
                logging.INFO,
                "provtel: GPU readings through %s unavailable: %s",
                self.backend.source,
                self.reason,
            )
            return
        self._opened = True
        if not self.gpus:
            self.reason = "no GPU visible to the job"
            self.close()
            return
        # One energy counter per physical GPU, named after the first of the job's GPUs on it.
        slices: dict[str, list[GpuInfo]] = {}
        for info in self.gpus:
            slices.setdefault(info.physical_uuid, []).append(info)
        owners: list[tuple[int, GpuInfo, str | None]] = []
        for physical, infos in slices.items():
            note = None
            if infos[0].parent_uuid is not None:
                keys = ", ".join(f"gpu.{i.index}" for i in infos)
                note = (
                    f"shared: whole-GPU counter of {physical} (MIG slices {keys}; "
                    "not split between slices)"
                )
            owners.append((infos[0].index, infos[0], note))
        self._physical = [(index, info) for index, info, _ in owners]
        self.energy = GpuEnergy(self, owners)
        # Take the counters' starting points now, so that the first activity has a baseline.
        self.energy.read_energy()

    def _create_instruments(self, meter: Meter) -> None:
        if not self.gpus:
            return
        meter.create_observable_counter(
            hw.HW_ENERGY, [self._observe_energy], unit="J", description="Energy used by the GPU."
        )
        if self.energy is not None:
            create_emissions_counter(meter, self.energy, self._live)
        gauges: list[tuple[str, Callable[[CallbackOptions], Iterable[Observation]], str, str]] = [
            (hw.HW_POWER, self._observe_power, "W", "Power drawn by the GPU."),
            (
                hw.HW_GPU_UTILIZATION,
                self._observe_utilization,
                "1",
                "Share of time a kernel was running on the GPU.",
            ),
            (hw.HW_TEMPERATURE, self._observe_temperature, "Cel", "GPU temperature."),
            (hw.ML_HW_GPU_CLOCK_SPEED, self._observe_clock, "Hz", "SM clock of the GPU."),
        ]
        for name, callback, unit, description in gauges:
            meter.create_observable_gauge(name, [callback], unit=unit, description=description)
        updown: list[tuple[str, Callable[[CallbackOptions], Iterable[Observation]], str, str]] = [
            (hw.HW_GPU_MEMORY_USAGE, self._observe_memory, "By", "GPU memory in use."),
            (hw.HW_GPU_MEMORY_LIMIT, self._observe_memory_limit, "By", "GPU memory size."),
            (hw.HW_STATUS, self._observe_status, "1", "1 for the GPU's current state."),
            (
                hw.ML_PROCESS_GPU_MEMORY_USAGE,
                self._observe_process_memory,
                "By",
                "GPU memory used by this process.",
            ),
        ]
        for name, callback, unit, description in updown:
            meter.create_observable_up_down_counter(
                name, [callback], unit=unit, description=description
            )

    def close(self) -> None:
        """Stop observing and release the library."""
        self._enabled = False
        if self._opened:
            self._opened = False
            try:
                self.backend.close()
            except Exception:  # the process is going away or the driver already went
                logger.debug("provtel: closing %s failed", self.backend.source, exc_info=True)

    # -- reading with the unavailability rules -----------------------------------------------------
    def _device(self, index: int) -> str:
        return f"gpu.{index}"

    def read(self, reading: str, index: int, fn: Callable[[int], T]) -> T | None:
        """``fn(index)``, or None when unavailable (recorded once, with the reason)."""
        device = self._device(index)
        if index in self._lost or self._missing.has(reading, device):
            return None
        try:
            return fn(index)
        except ReadingUnavailable as exc:
            self._missing.add(reading, device, str(exc))
        except DeviceLost as exc:
            self._mark_lost(index, str(exc))
        except ReadError as exc:
            log_once(
                ("gpu-read", self.backend.source, reading, device, str(exc)),
                logging.INFO,
                "provtel: reading %s of %s failed (%s); tried again later",
                reading,
                device,
                exc,
            )
        return None

    def _mark_lost(self, index: int, reason: str) -> None:
        lost = next(info for info in self.gpus if info.index == index)
        with self._lost_lock:
            for info in self.gpus:  # every slice of a lost GPU is lost with it
                if info.physical_uuid == lost.physical_uuid and info.index not in self._lost:
                    self._lost[info.index] = reason
        log_once(
            ("gpu-lost", self.backend.source, lost.physical_uuid),
            logging.WARNING,
            "provtel: GPU %s (%s) is lost: %s; it is no longer read",
            lost.physical_uuid,
            self._device(index),
            reason,
        )

    def failure(self, index: int, reading: str) -> str | None:
        """Why ``reading`` of GPU ``index`` is unavailable, or None."""
        if index in self._lost:
            return f"lost: {self._lost[index]}"
        return self._missing.items.get((reading, self._device(index)))

    def _live(self) -> bool:
        return self._enabled and _runtime.active()

    # -- callbacks (metric reader thread) --------------------------------------------------------
    def _observe_energy(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live() or self.energy is None:
            return
        for device, joules in zip(self.energy.devices, self.energy.read_energy(), strict=True):
            if joules is not None:
                yield Observation(joules, {hw.HW_ID: device.hw_id, hw.HW_TYPE: "gpu"})

    def _physical_gauge(self, reading: str, fn: Callable[[int], float]) -> Iterable[Observation]:
        if not self._live():
            return
        for index, info in self._physical:
            value = self.read(reading, index, fn)
            if value is not None:
                yield Observation(value, {hw.HW_ID: info.physical_uuid, hw.HW_TYPE: "gpu"})

    def _observe_power(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._physical_gauge(hw.HW_POWER, self.backend.power_w)

    def _observe_clock(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._physical_gauge(hw.ML_HW_GPU_CLOCK_SPEED, self.backend.sm_clock_hz)

    def _observe_temperature(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        for index, info in self._physical:
            value = self.read(hw.HW_TEMPERATURE, index, self.backend.temperature_c)
            if value is not None:
                yield Observation(
                    value,
                    {
                        hw.HW_ID: f"{info.physical_uuid}:temperature",
                        hw.HW_TYPE: "temperature",
                        hw.HW_PARENT: info.physical_uuid,
                        hw.HW_SENSOR_LOCATION: "gpu",
                    },
                )

    def _per_device(self, info: GpuInfo) -> dict[str, Any]:
        attrs: dict[str, Any] = {hw.HW_ID: info.uuid, hw.HW_TYPE: "gpu"}
        if info.parent_uuid:
            attrs[hw.HW_PARENT] = info.parent_uuid
        return attrs

    def _observe_utilization(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        for info in self.gpus:
            value = self.read(hw.HW_GPU_UTILIZATION, info.index, self.backend.utilization)
            if value is not None:
                yield Observation(value, {**self._per_device(info), hw.HW_GPU_TASK: "general"})

    def _observe_memory(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        for info in self.gpus:
            value = self.read(hw.HW_GPU_MEMORY_USAGE, info.index, self.backend.memory_used)
            if value is not None:
                yield Observation(value, self._per_device(info))

    def _observe_memory_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        for info in self.gpus:
            if info.memory_limit is not None and info.index not in self._lost:
                yield Observation(info.memory_limit, self._per_device(info))

    def _observe_status(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        for index, info in self._physical:
            lost = index in self._lost
            attrs = {hw.HW_ID: info.physical_uuid, hw.HW_TYPE: "gpu"}
            yield Observation(0 if lost else 1, {**attrs, hw.HW_STATE: "ok"})
            yield Observation(1 if lost else 0, {**attrs, hw.HW_STATE: "failed"})

    def _observe_process_memory(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        now = time.monotonic()
        if now >= self._process_next:
            # Enumerating processes takes the driver's lock for milliseconds: rarely.
            self._process_next = now + self._process_interval_s
            self._process_cache = self._enumerate_processes()
        for info in self.gpus:
            used = self._process_cache.get(info.index)
            if used is not None:
                yield Observation(used, self._per_device(info))

    def _enumerate_processes(self) -> dict[int, int]:
        self.process_enumerations += 1
        found: dict[int, int] = {}
        for info in self.gpus:
            used = self.read(
                hw.ML_PROCESS_GPU_MEMORY_USAGE,
                info.index,
                lambda i: self.backend.process_memory(i, self._pid),
            )
            if used is not None:
                found[info.index] = used
        return found

    # -- the component interface ---------------------------------------------------------------
    def sample(self) -> None:
        """Read the energy counters (sampling thread): resets and losses are seen early."""
        if self.energy is not None and _runtime.active():
            self.energy.read_energy()

    def run_attributes(self) -> Mapping[str, Any]:
        """The GPUs' description and the energy status, for the run span."""
        status = "ml.energy.gpu.status"
        if self.reason is not None:
            return {status: f"{UNAVAILABLE}: {self.label}: {self.reason}"}
        attrs = gpu_description(self.gpus)
        assert self.energy is not None
        measured = 0
        for n, device in enumerate(self.energy.devices):
            if self.energy.last_energy(n) is not None:
                measured += 1  # a device lost later is reported `partial` on the run span
            else:
                failure = self.energy.failure(n) or "no reading yet"
                attrs[f"ml.energy.{device.key}.status"] = f"{UNAVAILABLE}: {failure}"
        if measured == 0:
            reasons = "; ".join(
                f"{d.key}: {self.energy.failure(n)}" for n, d in enumerate(self.energy.devices)
            )
            attrs[status] = f"{UNAVAILABLE}: {self.label}: {reasons}"
        else:
            attrs[status] = self.method
        return attrs

    def unavailable(self) -> list[str]:
        """Missing readings, ``<reading> <device>: <reason>``."""
        if self.reason is not None:
            return [f"gpu ({self.backend.source}): {self.reason}"]
        lines = self._missing.lines()
        lines += [f"gpu {self._device(i)}: lost: {reason}" for i, reason in self._lost.items()]
        return lines
