"""Carbon: grams CO2eq = energy (kWh) x grid carbon intensity (gCO2eq/kWh) x PUE.

The intensity is a location-based annual average chosen offline from ``grid_intensity.csv``
(shipped in this package: countries and cloud regions, each with its source and year), or set
directly. Configuration (see :mod:`.environment_variables`):

* ``OTEL_PYTHON_PROVTEL_CARBON_REGION``: ``FR``, ``US``, ``aws:eu-west-3``… (default ``WORLD``);
* ``OTEL_PYTHON_PROVTEL_CARBON_INTENSITY``: gCO2eq/kWh, overrides the table;
* ``OTEL_PYTHON_PROVTEL_PUE``: power usage effectiveness (default 1.0).

The intensity, its source and year, the region, the PUE and the method are recorded on the run
with the result, so a reader can redo the computation with other figures.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from provtel.instrumentation.hardware._common import EnergySource, log_once
from provtel.instrumentation.hardware.environment_variables import (
    OTEL_PYTHON_PROVTEL_CARBON_INTENSITY,
    OTEL_PYTHON_PROVTEL_CARBON_REGION,
    OTEL_PYTHON_PROVTEL_PUE,
)
from provtel.semconv import hardware as hw

DEFAULT_REGION = "WORLD"
DEFAULT_PUE = 1.0
METHOD = "location-based: energy (kWh) x annual grid intensity x PUE"
J_PER_KWH = 3.6e6
TABLE = "grid_intensity.csv"
_UNCHECKED = " [table value not yet checked against the source]"


@dataclass(frozen=True, slots=True)
class GridIntensity:
    """One row of the table, resolved (a cloud region carries its grid's value)."""

    region: str
    name: str
    gco2e_per_kwh: float
    source: str
    year: int | None
    checked: bool


@dataclass(frozen=True, slots=True)
class CarbonConfig:
    """The figures emissions are computed with."""

    region: str
    intensity: float  # gCO2eq/kWh
    source: str
    year: int | None
    pue: float

    def emissions_g(self, energy_j: float) -> float:
        """Grams CO2eq for ``energy_j`` joules of measured energy."""
        return energy_j / J_PER_KWH * self.intensity * self.pue

    def attributes(self) -> dict[str, Any]:
        """The figures as run-span attributes."""
        attrs: dict[str, Any] = {
            hw.ML_CARBON_REGION: self.region,
            hw.ML_CARBON_INTENSITY: self.intensity,
            hw.ML_CARBON_INTENSITY_SOURCE: self.source,
            hw.ML_CARBON_PUE: self.pue,
            hw.ML_CARBON_METHOD: METHOD,
        }
        if self.year is not None:
            attrs[hw.ML_CARBON_INTENSITY_YEAR] = self.year
        return attrs


def _parse_table(text: str) -> dict[str, GridIntensity]:
    rows = list(csv.DictReader(io.StringIO(text)))
    by_region = {r["region"].upper(): r for r in rows}
    table: dict[str, GridIntensity] = {}
    for key, row in by_region.items():
        checked = row["checked"].strip().lower() == "yes"
        source = row["source"]
        if row["gco2e_per_kwh"]:
            value, year = float(row["gco2e_per_kwh"]), int(row["year"]) if row["year"] else None
        else:  # a cloud region: the location-based value of the grid it draws from
            grid = by_region[row["grid"].upper()]
            value = float(grid["gco2e_per_kwh"])
            year = int(grid["year"]) if grid["year"] else None
            source = f"{grid['source']}; {row['name']} taken as {grid['name']} ({source})"
            checked = checked and grid["checked"].strip().lower() == "yes"
        table[key] = GridIntensity(key, row["name"], value, source, year, checked)
    return table


@lru_cache(maxsize=1)
def grid_table() -> Mapping[str, GridIntensity]:
    """The shipped table of grid intensities, by upper-case region."""
    text = resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8")
    return _parse_table(text)


def _number(name: str, raw: str, minimum: float) -> float | str:
    try:
        value = float(raw)
    except ValueError:
        return f"{name}={raw!r} is not a number"
    if not value >= minimum:
        return f"{name}={raw!r} is below {minimum}"
    return value


def resolve(environ: Mapping[str, str] | None = None) -> CarbonConfig | str:
    """The configured figures, or the reason they cannot be used (logged once)."""
    env = os.environ if environ is None else environ
    region = (env.get(OTEL_PYTHON_PROVTEL_CARBON_REGION) or DEFAULT_REGION).strip().upper()
    pue_raw = (env.get(OTEL_PYTHON_PROVTEL_PUE) or "").strip()
    pue = _number(OTEL_PYTHON_PROVTEL_PUE, pue_raw, 1.0) if pue_raw else DEFAULT_PUE
    problem = pue if isinstance(pue, str) else None
    intensity_raw = (env.get(OTEL_PYTHON_PROVTEL_CARBON_INTENSITY) or "").strip()
    config: CarbonConfig | None = None
    if problem is None and intensity_raw:
        value = _number(OTEL_PYTHON_PROVTEL_CARBON_INTENSITY, intensity_raw, 0.0)
        if isinstance(value, str):
            problem = value
        else:
            source = f"configured ({OTEL_PYTHON_PROVTEL_CARBON_INTENSITY})"
            config = CarbonConfig(region, value, source, None, float(pue))
    elif problem is None:
        row = grid_table().get(region)
        if row is None:
            known = ", ".join(sorted(grid_table()))
            problem = f"unknown {OTEL_PYTHON_PROVTEL_CARBON_REGION}={region!r} (known: {known})"
        else:
            source = row.source + ("" if row.checked else _UNCHECKED)
            config = CarbonConfig(row.region, row.gco2e_per_kwh, source, row.year, float(pue))
    if config is not None:
        return config
    assert problem is not None
    log_once(("carbon", problem), logging.WARNING, "provtel: no carbon estimate: %s", problem)
    return problem


def create_emissions_counter(meter: Meter, source: EnergySource, live: Callable[[], bool]) -> None:
    """``ml.carbon.emissions`` (g{CO2eq}) of each device of ``source``, by ``hw.id``.

    Uses the energy totals the source last read (at this collection's ``hw.energy``, by the
    sampling thread, or at an activity boundary): no extra hardware access.
    """
    config = resolve()
    if isinstance(config, str):
        return

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        if not live():
            return
        for i, device in enumerate(source.devices):
            joules = source.last_energy(i)
            if joules is not None:
                yield Observation(
                    config.emissions_g(joules),
                    {
                        hw.HW_ID: device.hw_id,
                        hw.HW_TYPE: device.hw_type,
                        hw.ML_CARBON_REGION: config.region,
                    },
                )

    meter.create_observable_counter(
        hw.ML_CARBON_EMISSIONS_METRIC,
        [observe],
        unit="g{CO2eq}",
        description="Emissions so far: measured energy x grid intensity x PUE.",
    )
