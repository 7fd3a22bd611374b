"""Energy per activity: the difference of the cumulative energy counters across an activity.

:class:`EnergyListener` is registered with :mod:`provtel.instrumentation.activity` while any
hardware instrumentor is active. When the PyTorch instrumentation opens an activity (the run, a
pass, a block of steps) the listener reads every available counter; when it closes, it returns

* ``ml.energy.<device>`` (J) for each measured device, ``ml.energy.total`` (J) and
  ``ml.energy.method`` (``counter:nvml,counter:rapl``);
* ``ml.energy.<device>.status`` when a device was lost during the activity (the energy up to
  the loss is kept, marked ``partial``) or is a shared MIG parent;

and on the run also the hardware description, the status of each kind of device
(``ml.energy.gpu.status = "unavailable: NVML: NVML Shared Library Not Found"``), the readings
that are unavailable (``ml.hw.unavailable``) and the carbon figures. With nothing to measure, an
epoch or step block gets no attribute at all and costs about a microsecond.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from provtel.instrumentation.hardware import _runtime, carbon
from provtel.instrumentation.hardware._common import UNAVAILABLE, EnergySource
from provtel.semconv import activities as act
from provtel.semconv import hardware as hw

if TYPE_CHECKING:
    from provtel.instrumentation.hardware._runtime import Runtime

_EMPTY: Mapping[str, Any] = MappingProxyType({})

Token = tuple[tuple[EnergySource, tuple[float | None, ...]], ...]


def energy_key(device: str) -> str:
    """``ml.energy.<device>``."""
    return f"ml.energy.{device}"


def status_key(component: str) -> str:
    """``ml.energy.<component>.status``."""
    return f"ml.energy.{component}.status"


class EnergyListener:
    """An :class:`~provtel.instrumentation.activity.ActivityListener` for energy and carbon."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def __repr__(self) -> str:
        return "<provtel hardware EnergyListener>"

    def on_begin(self, kind: str) -> Token | None:
        """Read every counter (nothing to do when none is available)."""
        sources = self._runtime.energy_sources
        if not sources or not _runtime.active():
            return None
        return tuple((source, source.read_energy()) for source in sources)

    def on_finish(self, kind: str, token: Token | None) -> Mapping[str, Any]:
        """Attributes for the activity's span."""
        if token is None and (kind != act.RUN or not _runtime.active()):
            return _EMPTY
        attributes: dict[str, Any] = {}
        total: float | None = self._energy(token, attributes) if token else None
        if kind == act.RUN:
            self._run_summary(total, attributes)
        return attributes

    @staticmethod
    def _energy(token: Token, attributes: dict[str, Any]) -> float | None:
        total = 0.0
        methods: dict[str, None] = {}
        for source, before in token:
            after = source.read_energy()
            for i, device in enumerate(source.devices):
                start, end = before[i], after[i]
                if start is None:
                    if source.failure(i) is None and source.last_energy(i) is not None:
                        # A healthy device whose read failed once (timeout): say so.
                        attributes[status_key(device.key)] = (
                            "unavailable: the read at the start of the activity failed"
                        )
                    continue
                if end is None:  # lost during the activity: keep what was measured until then
                    end = source.last_energy(i)
                    if end is None:
                        continue
                    reason = (
                        source.failure(i) or "the last read failed; energy until the one before"
                    )
                    attributes[status_key(device.key)] = f"partial: {reason}"
                elif device.note:
                    attributes[status_key(device.key)] = device.note
                used = end - start
                attributes[energy_key(device.key)] = used
                total += used
                methods[device.method] = None
        if not methods:
            return None
        attributes[hw.ML_ENERGY_TOTAL] = total
        attributes[hw.ML_ENERGY_METHOD] = ",".join(methods)
        return total

    def _run_summary(self, total: float | None, attributes: dict[str, Any]) -> None:
        statuses: dict[str, list[str]] = {}
        unavailable: list[str] = []
        for component in self._runtime.components:
            for key, value in component.run_attributes().items():
                if key.startswith("ml.energy.") and key.endswith(".status"):
                    statuses.setdefault(key, []).append(str(value))
                elif key not in attributes:
                    attributes[key] = value
            unavailable.extend(component.unavailable())
        for key, values in statuses.items():
            if key in attributes:  # set for this run by _energy (partial, shared)
                continue
            measured = [v for v in values if not v.startswith(UNAVAILABLE)]
            attributes[key] = ",".join(measured) if measured else "; ".join(values)
        if hw.ML_ENERGY_METHOD not in attributes:
            attributes[hw.ML_ENERGY_METHOD] = UNAVAILABLE
        if unavailable:
            attributes[hw.ML_HW_UNAVAILABLE] = unavailable
        config = carbon.resolve()
        if isinstance(config, str):
            attributes[hw.ML_CARBON_STATUS] = f"{UNAVAILABLE}: {config}"
            return
        attributes.update(config.attributes())
        if total is None:
            attributes[hw.ML_CARBON_STATUS] = f"{UNAVAILABLE}: no energy was measured"
        else:
            attributes[hw.ML_CARBON_EMISSIONS] = config.emissions_g(total)
