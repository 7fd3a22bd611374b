"""What every hardware backend shares: errors, counters, energy sources, logging once."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger("provtel.instrumentation.hardware")

#: Prefix of every reason that says a reading is missing.
UNAVAILABLE = "unavailable"


class BackendUnavailable(Exception):
    """The backend cannot be used at all (no library, no driver, no device, no permission)."""


class ReadingUnavailable(Exception):
    """One reading is not available for one device, for good (NotSupported, no permission)."""


class DeviceLost(Exception):
    """The device stopped answering (NVML ``GpuIsLost``); it is not polled again."""


class ReadError(Exception):
    """A reading failed this time (timeout, unknown error); it is tried again later."""


_logged: set[Any] = set()
_logged_lock = threading.Lock()


def log_once(key: Any, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
    """Log ``message`` the first time ``key`` is seen in this process."""
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.log(level, message, *args, exc_info=exc_info)


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    """A number from the environment; a bad value is logged once and the default used."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also rejects NaN
        log_once(
            ("env", name, raw),
            logging.WARNING,
            "provtel: %s=%r is not a number >= %s; using %s",
            name,
            raw,
            minimum,
            default,
        )
        return default
    return value


class CumulativeCounter:
    """Turn a raw hardware energy counter into a running total that only grows.

    A counter that goes down has wrapped around (when its range is known: RAPL's
    ``max_energy_range_uj``) or was reset (driver reload, GPU reset: NVML). A wrap adds the
    distance to the top of the range; after a reset the new value is what was used since. Totals
    are integers in the counter's unit, so no rounding accumulates.
    """

    __slots__ = ("last", "modulus", "resets", "total", "wraps")

    def __init__(self, modulus: int | None = None) -> None:
        self.modulus = modulus  # range + 1: the value after which the counter restarts at 0
        self.last: int | None = None
        self.total = 0
        self.wraps = 0
        self.resets = 0

    def update(self, raw: int) -> int:
        """Take a new raw reading; return the total since the first one."""
        last = self.last
        self.last = raw
        if last is None:
            return self.total
        if raw >= last:
            self.total += raw - last
        elif self.modulus:
            self.total += raw + self.modulus - last
            self.wraps += 1
        else:
            self.total += raw
            self.resets += 1
        return self.total


@dataclass(frozen=True, slots=True)
class EnergyDevice:
    """One device whose energy counter a source reads."""

    key: str  # ``gpu.0``, ``cpu.0``, ``memory.0``: the ``<device>`` of ``ml.energy.<device>``
    hw_type: str  # OpenTelemetry ``hw.type``: ``gpu``, ``cpu``, ``memory``
    hw_id: str  # OpenTelemetry ``hw.id``
    method: str  # ``counter:nvml``
    note: str | None = None  # e.g. ``shared: ...`` for MIG slices of one GPU


class EnergySource(Protocol):
    """A set of cumulative energy counters (Zeus style: one small backend per kind of device)."""

    devices: tuple[EnergyDevice, ...]

    def read_energy(self) -> tuple[float | None, ...]:
        """Energy in J used by each device since instrumentation began; None when unavailable."""

    def last_energy(self, index: int) -> float | None:
        """The last total read for device ``index`` before it became unavailable."""

    def failure(self, index: int) -> str | None:
        """Why device ``index`` is unavailable now, or None."""


class Component(Protocol):
    """What an instrumentor hands the shared runtime."""

    @property
    def energy(self) -> EnergySource | None:
        """The energy counters, when the component has any available."""

    def run_attributes(self) -> Mapping[str, Any]:
        """Attributes for the run span: hardware description and per-kind energy status."""

    def unavailable(self) -> list[str]:
        """Readings that are not available, each ``<reading> <device>: <reason>``."""

    def sample(self) -> None:
        """Read the counters on the sampling thread (wrap-around and reset correction)."""

    def close(self) -> None:
        """Release the backend (uninstrument)."""
