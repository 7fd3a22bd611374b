"""CPU package and DRAM energy from RAPL, through Linux powercap (``/sys/class/powercap``).

Enabled by ``opentelemetry-instrument`` (entry point ``provtel_rapl``); disable it with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_rapl``. By hand::

    from provtel.instrumentation.hardware.rapl import RaplInstrumentor
    RaplInstrumentor().instrument()

It records ``hw.energy`` (J, cumulative) with ``hw.type = cpu`` for each package zone
(``intel-rapl:<n>``, named ``package-<n>``; also AMD Zen through the same driver) and
``hw.type = memory`` for each DRAM subzone, ``hw.id`` being the zone (``intel-rapl:0:1``), and
the per-activity energy ``ml.energy.cpu.<n>`` / ``ml.energy.memory.<n>``.

No double counting: ``psys`` (the whole SoC, which contains the packages), ``core`` and
``uncore`` (parts of a package) and the ``intel-rapl-mmio`` duplicates of package zones are not
read. Counters wrap at ``max_energy_range_uj`` (minutes at full load): the difference is taken
modulo the range, and the sampling thread reads them every
``OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL`` seconds so that no wrap is missed.

Unavailable, reported once with the reason: no powercap directory (VMs, containers, macOS), no
package zone, or ``energy_uj`` not readable (root only since CVE-2020-8694; see docs/energy.md
for a read-only bind mount or a ``chmod`` at boot). ``OTEL_PYTHON_PROVTEL_RAPL_ROOT`` points to
another powercap directory.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from provtel.instrumentation.hardware import _runtime
from provtel.instrumentation.hardware._common import (
    UNAVAILABLE,
    BackendUnavailable,
    CumulativeCounter,
    EnergyDevice,
    log_once,
)
from provtel.instrumentation.hardware._instrumentor import HardwareInstrumentor
from provtel.instrumentation.hardware.carbon import create_emissions_counter
from provtel.instrumentation.hardware.environment_variables import OTEL_PYTHON_PROVTEL_RAPL_ROOT
from provtel.semconv import hardware as hw

logger = logging.getLogger(__name__)

DEFAULT_ROOT = "/sys/class/powercap"
METHOD = "counter:rapl"
_ZONE = re.compile(r"intel-rapl:(\d+)(?::(\d+))?")
_PACKAGE = re.compile(r"package-(\d+)")


def read_int(path: str) -> int:
    """Read a small integer file (``os.read``: 4 µs against 10 µs for ``open``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return int(os.read(fd, 64))
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class RaplZone:
    """One counter provtel reads."""

    zone: str  # directory name, ``intel-rapl:0`` (the ``hw.id``)
    name: str  # ``package-0``, ``dram``
    hw_type: str  # ``cpu`` or ``memory``
    key: str  # ``cpu.0``, ``memory.0``
    energy_path: str
    max_range_uj: int | None


class Rapl:
    """The RAPL zones of one powercap directory."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or os.environ.get(OTEL_PYTHON_PROVTEL_RAPL_ROOT) or DEFAULT_ROOT)
        self.skipped: list[str] = []

    def open(self) -> list[RaplZone]:
        """The zones to read; raise BackendUnavailable with the reason."""
        if not self.root.is_dir():
            raise BackendUnavailable(f"no powercap directory {self.root}")
        zones: list[RaplZone] = []
        entries = sorted(self.root.iterdir(), key=lambda p: _sort_key(p.name))
        packages: dict[str, int] = {}  # top zone -> package number
        for entry in entries:
            match = _ZONE.fullmatch(entry.name)
            if match is None:
                continue  # intel-rapl (the control type), intel-rapl-mmio:* (duplicates)
            try:
                name = (entry / "name").read_text().strip()
            except OSError:
                continue
            top, sub = match.group(1), match.group(2)
            package = _PACKAGE.fullmatch(name)
            if sub is None and package:
                packages[top] = int(package.group(1))
                zones.append(self._zone(entry, name, "cpu", f"cpu.{package.group(1)}"))
            elif sub is not None and name == "dram" and top in packages:
                zones.append(self._zone(entry, name, "memory", f"memory.{packages[top]}"))
            else:
                self.skipped.append(f"{entry.name} ({name})")
        if not any(z.hw_type == "cpu" for z in zones):
            raise BackendUnavailable(f"no RAPL package zone under {self.root}")
        for zone in zones:
            try:
                read_int(zone.energy_path)
            except PermissionError as exc:
                raise BackendUnavailable(
                    f"permission denied reading {zone.energy_path} (root only since "
                    "CVE-2020-8694; see docs/energy.md)"
                ) from exc
            except (OSError, ValueError) as exc:
                raise BackendUnavailable(f"cannot read {zone.energy_path}: {exc}") from exc
        return zones

    @staticmethod
    def _zone(entry: Path, name: str, hw_type: str, key: str) -> RaplZone:
        try:
            max_range: int | None = read_int(str(entry / "max_energy_range_uj"))
        except (OSError, ValueError):
            max_range = None  # a decrease is then taken for a reset
        return RaplZone(entry.name, name, hw_type, key, str(entry / "energy_uj"), max_range)


def _sort_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name)) or (-1,)


class RaplEnergy:
    """Cumulative, wrap-corrected RAPL counters (an ``EnergySource``)."""

    def __init__(self, zones: list[RaplZone]) -> None:
        self.zones = zones
        self.devices = tuple(EnergyDevice(z.key, z.hw_type, z.zone, METHOD) for z in zones)
        self._counters = [
            CumulativeCounter(z.max_range_uj + 1 if z.max_range_uj else None) for z in zones
        ]
        self._last: list[float | None] = [None] * len(zones)
        self._failures: list[str | None] = [None] * len(zones)
        self._lock = threading.Lock()

    def read_energy(self) -> tuple[float | None, ...]:
        """J used by each zone since instrumentation; None once unreadable."""
        out: list[float | None] = []
        with self._lock:
            for n, zone in enumerate(self.zones):
                if self._failures[n] is not None:
                    out.append(None)
                    continue
                try:
                    raw = read_int(zone.energy_path)
                except (OSError, ValueError) as exc:
                    self._failures[n] = f"cannot read {zone.energy_path}: {exc}"
                    log_once(("rapl", zone.zone), logging.WARNING, "provtel: %s", self._failures[n])
                    out.append(None)
                    continue
                joules = self._counters[n].update(raw) / 1e6
                self._last[n] = joules
                out.append(joules)
        return tuple(out)

    def last_energy(self, index: int) -> float | None:
        """The last total read for zone ``index``."""
        return self._last[index]

    def failure(self, index: int) -> str | None:
        """Why zone ``index`` is unreadable now."""
        return self._failures[index]

    @property
    def wraps(self) -> int:
        """Wrap-arounds corrected so far."""
        return sum(c.wraps for c in self._counters)


class RaplMonitor:
    """The RAPL component: ``hw.energy`` for packages and DRAM, per-activity energy."""

    def __init__(self, rapl: Rapl, meter: Meter | None) -> None:
        self.rapl = rapl
        self.reason: str | None = None
        self.energy: RaplEnergy | None = None
        self._enabled = True
        try:
            zones = rapl.open()
        except BackendUnavailable as exc:
            self.reason = str(exc)
            log_once(("rapl", self.reason), logging.INFO, "provtel: RAPL unavailable: %s", exc)
            return
        self.energy = RaplEnergy(zones)
        self.energy.read_energy()  # the starting point
        if meter is not None:
            meter.create_observable_counter(
                hw.HW_ENERGY,
                [self._observe],
                unit="J",
                description="Energy used by a CPU package or its DRAM (RAPL).",
            )
            create_emissions_counter(meter, self.energy, self._live)

    def _live(self) -> bool:
        return self._enabled and _runtime.active()

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._live() or self.energy is None:
            return
        for zone, joules in zip(self.energy.zones, self.energy.read_energy(), strict=True):
            if joules is not None:
                yield Observation(
                    joules, {hw.HW_ID: zone.zone, hw.HW_TYPE: zone.hw_type, hw.HW_NAME: zone.name}
                )

    def sample(self) -> None:
        """Read the counters often enough to see every wrap (sampling thread)."""
        if self.energy is not None and _runtime.active():
            self.energy.read_energy()

    def run_attributes(self) -> Mapping[str, Any]:
        """Energy status of CPU packages and DRAM, for the run span."""
        if self.energy is None:
            reason = f"{UNAVAILABLE}: RAPL: {self.reason}"
            return {"ml.energy.cpu.status": reason, "ml.energy.memory.status": reason}
        attrs: dict[str, Any] = {}
        for kind in ("cpu", "memory"):
            indices = [n for n, z in enumerate(self.energy.zones) if z.hw_type == kind]
            if not indices:
                attrs[f"ml.energy.{kind}.status"] = (
                    f"{UNAVAILABLE}: RAPL: no DRAM zone under {self.rapl.root}"
                )
            elif all(self.energy.last_energy(n) is None for n in indices):
                reasons = "; ".join(str(self.energy.failure(n)) for n in indices)
                attrs[f"ml.energy.{kind}.status"] = f"{UNAVAILABLE}: RAPL: {reasons}"
            else:
                attrs[f"ml.energy.{kind}.status"] = METHOD
        return attrs

    def unavailable(self) -> list[str]:
        """Missing readings."""
        if self.energy is None:
            return [f"hw.energy cpu, memory (rapl): {self.reason}"]
        lines = [
            f"hw.energy {z.key} (rapl): {self.energy.failure(n)}"
            for n, z in enumerate(self.energy.zones)
            if self.energy.failure(n) is not None
        ]
        if not any(z.hw_type == "memory" for z in self.energy.zones):
            lines.append(f"hw.energy memory (rapl): no DRAM zone under {self.rapl.root}")
        return lines

    def close(self) -> None:
        """Stop observing."""
        self._enabled = False


class RaplInstrumentor(HardwareInstrumentor):
    """Records CPU package and DRAM energy from RAPL (see the module documentation).

    ``instrument(meter_provider=..., root=...)``: ``root`` replaces ``/sys/class/powercap``.
    """

    def _create(self, meter: Meter, **kwargs: Any) -> RaplMonitor:
        return RaplMonitor(Rapl(kwargs.get("root")), meter)
