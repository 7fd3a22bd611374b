"""Process and system CPU and memory, with current OpenTelemetry semantic conventions (psutil).

Enabled by ``opentelemetry-instrument`` (entry point ``provtel_host``); disable it with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_host``. By hand::

    from provtel.instrumentation.hardware.host import HostInstrumentor
    HostInstrumentor().instrument()

=========================== ================= ====== =========================================
metric                      instrument        unit   attributes
=========================== ================= ====== =========================================
``process.cpu.time``        counter           s      ``cpu.mode`` = ``user``/``system``
``process.cpu.utilization`` gauge             1      CPU time / (elapsed x CPUs available)
``process.memory.usage``    up-down counter   By     resident set size
``process.memory.virtual``  up-down counter   By
``process.thread.count``    up-down counter   {thread}
``system.cpu.utilization``  gauge             1      ``cpu.mode`` (all CPUs together)
``system.memory.usage``     up-down counter   By     ``system.memory.state``
``system.memory.limit``     up-down counter   By
=========================== ================= ====== =========================================

Values are read when the SDK collects (``OTEL_METRIC_EXPORT_INTERVAL``), on its reader thread;
there is no thread of our own. The process is the one that reads: a forked child (a DataLoader
worker) reports nothing, so the parent's series are never duplicated or mislabelled.

It also describes the host on the run span: ``host.cpu.model.name``,
``ml.host.cpu.logical_count``, ``ml.host.cpu.physical_count``, ``ml.host.cpu.available`` and
``ml.host.memory.size``.

Why not ``opentelemetry-instrumentation-system-metrics``: its attribute keys predate the current
conventions (``state``/``type``/``cpu`` instead of ``cpu.mode``/``system.memory.state``/
``cpu.logical_number``), which an instrumentation cannot rename (SDK views only drop
attributes); by default it emits 33 metrics at about 9 ms a collection, and binds the process at
start, so forked workers report the parent. See docs/energy.md for the measurements.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from provtel.instrumentation.hardware import _runtime
from provtel.instrumentation.hardware._common import log_once
from provtel.instrumentation.hardware._instrumentor import HardwareInstrumentor
from provtel.semconv import hardware as hw

logger = logging.getLogger(__name__)

# psutil's cpu_times fields -> OpenTelemetry cpu.mode
_SYSTEM_MODES = (
    ("user", ("user",)),
    ("nice", ("nice",)),
    ("system", ("system",)),
    ("idle", ("idle",)),
    ("iowait", ("iowait",)),
    ("interrupt", ("irq", "softirq", "interrupt", "dpc")),
    ("steal", ("steal",)),
)
_MEMORY_STATES = ("used", "free", "cached", "buffers")


def cpu_model() -> str | None:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def host_description(psutil: Any = None) -> dict[str, Any]:
    """CPU model, core counts and memory of the host (for the run span or a resource)."""
    attrs: dict[str, Any] = {}
    model = cpu_model()
    if model:
        attrs[hw.HOST_CPU_MODEL_NAME] = model
    logical = os.cpu_count()
    if logical:
        attrs[hw.ML_HOST_CPU_LOGICAL_COUNT] = logical
    if hasattr(os, "sched_getaffinity"):
        attrs[hw.ML_HOST_CPU_AVAILABLE] = len(os.sched_getaffinity(0))
    if psutil is not None:
        physical = psutil.cpu_count(logical=False)
        if physical:
            attrs[hw.ML_HOST_CPU_PHYSICAL_COUNT] = physical
        attrs[hw.ML_HOST_MEMORY_SIZE] = int(psutil.virtual_memory().total)
    elif hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            attrs[hw.ML_HOST_MEMORY_SIZE] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return attrs


class HostCollector:
    """psutil readings for the observable instruments, one process object reused."""

    energy: None = None  # no energy counter: nothing for the sampling thread

    def __init__(self, meter: Meter | None, psutil: Any = None) -> None:
        self._enabled = True
        self.reason: str | None = None
        if psutil is None:
            try:
                import psutil as psutil_module
            except ImportError:
                psutil_module = None
                self.reason = "psutil is not installed"
                log_once(
                    ("host", self.reason), logging.INFO, "provtel: host metrics: %s", self.reason
                )
            psutil = psutil_module
        self._psutil = psutil
        self._lock = threading.Lock()
        self._description: dict[str, Any] | None = None
        if psutil is None:
            return
        self._process = psutil.Process()
        self._cpus = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        # Starting points for utilisation: the first collection then covers the time since here.
        self._last_process = (time.monotonic(), self._process_cpu())
        self._last_system = psutil.cpu_times()
        if meter is not None:
            self._create_instruments(meter)

    def _create_instruments(self, meter: Meter) -> None:
        meter.create_observable_counter(
            hw.PROCESS_CPU_TIME, [self._observe_cpu_time], unit="s", description="CPU time."
        )
        meter.create_observable_gauge(
            hw.PROCESS_CPU_UTILIZATION,
            [self._observe_cpu_utilization],
            unit="1",
            description="CPU time / (elapsed time x CPUs available) since the last collection.",
        )
        meter.create_observable_up_down_counter(
            hw.PROCESS_MEMORY_USAGE, [self._observe_rss], unit="By", description="Resident memory."
        )
        meter.create_observable_up_down_counter(
            hw.PROCESS_MEMORY_VIRTUAL, [self._observe_vms], unit="By", description="Virtual memory."
        )
        meter.create_observable_up_down_counter(
            hw.PROCESS_THREAD_COUNT,
            [self._observe_threads],
            unit="{thread}",
            description="Threads.",
        )
        meter.create_observable_gauge(
            hw.SYSTEM_CPU_UTILIZATION,
            [self._observe_system_cpu],
            unit="1",
            description="Share of all CPUs' time in each mode since the last collection.",
        )
        meter.create_observable_up_down_counter(
            hw.SYSTEM_MEMORY_USAGE,
            [self._observe_memory],
            unit="By",
            description="Memory by state.",
        )
        meter.create_observable_up_down_counter(
            hw.SYSTEM_MEMORY_LIMIT, [self._observe_memory_limit], unit="By", description="Memory."
        )

    def _live(self) -> bool:
        return self._enabled and _runtime.active()

    def _process_cpu(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def _observe_cpu_time(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        times = self._process.cpu_times()
        yield Observation(times.user, {hw.CPU_MODE: "user"})
        yield Observation(times.system, {hw.CPU_MODE: "system"})

    def _observe_cpu_utilization(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        now, cpu = time.monotonic(), self._process_cpu()
        with self._lock:
            then, before = self._last_process
            self._last_process = (now, cpu)
        if now > then:
            # CPU time ticks in 10 ms steps: over short intervals the ratio can pass 1.
            yield Observation(min(1.0, (cpu - before) / ((now - then) * self._cpus)))

    def _observe_rss(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._live():
            yield Observation(self._process.memory_info().rss)

    def _observe_vms(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._live():
            yield Observation(self._process.memory_info().vms)

    def _observe_threads(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._live():
            yield Observation(self._process.num_threads())

    def _observe_system_cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        assert self._psutil is not None
        now = self._psutil.cpu_times()
        with self._lock:
            before, self._last_system = self._last_system, now
        deltas = {
            mode: sum(getattr(now, f, 0.0) - getattr(before, f, 0.0) for f in fields)
            for mode, fields in _SYSTEM_MODES
        }
        elapsed = sum(deltas.values())
        if elapsed <= 0:
            return
        for mode, fields in _SYSTEM_MODES:
            if any(hasattr(now, f) for f in fields):  # the modes this OS has
                yield Observation(max(deltas[mode], 0.0) / elapsed, {hw.CPU_MODE: mode})

    def _observe_memory(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live():
            return
        assert self._psutil is not None
        memory = self._psutil.virtual_memory()
        for state in _MEMORY_STATES:
            value = getattr(memory, state, None)
            if value is not None:
                yield Observation(int(value), {hw.SYSTEM_MEMORY_STATE: state})

    def _observe_memory_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._live():
            assert self._psutil is not None
            yield Observation(int(self._psutil.virtual_memory().total))

    # -- the component interface ---------------------------------------------------------------
    def sample(self) -> None:
        """Nothing to sample: host readings are taken at collection."""

    def run_attributes(self) -> Mapping[str, Any]:
        """The host's description, for the run span (computed once)."""
        if self._description is None:
            self._description = host_description(self._psutil)
        return self._description

    def unavailable(self) -> list[str]:
        """Missing readings."""
        return [f"process.*, system.* (host): {self.reason}"] if self.reason else []

    def close(self) -> None:
        """Stop observing."""
        self._enabled = False


class HostInstrumentor(HardwareInstrumentor):
    """Records process and system CPU and memory (see the module documentation)."""

    def _create(self, meter: Meter, **kwargs: Any) -> HostCollector:
        return HostCollector(meter, kwargs.get("psutil"))
