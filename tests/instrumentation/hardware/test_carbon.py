"""Carbon: the shipped table, the configuration, and what the run records."""

from __future__ import annotations

from pathlib import Path

import pytest

from provtel.instrumentation import activity
from provtel.instrumentation.hardware import NvmlInstrumentor, RaplInstrumentor, carbon

from .conftest import Metrics
from .fakes import FakeGpu, FakeGpuBackend, rapl_tree, set_energy


def test_table_rows_have_a_value_a_source_and_a_year() -> None:
    table = carbon.grid_table()
    assert {"WORLD", "FR", "US", "DE", "AWS:EU-WEST-3", "GCP:EUROPE-WEST4"} <= set(table)
    for row in table.values():
        assert row.gco2e_per_kwh > 0 and row.source and row.year


def test_cloud_region_takes_its_grid_value_and_says_so() -> None:
    row = carbon.grid_table()["AWS:EU-WEST-3"]
    assert row.gco2e_per_kwh == carbon.grid_table()["FR"].gco2e_per_kwh
    assert "AWS Europe (Paris) taken as France" in row.source


def test_default_is_the_world_average_with_pue_one() -> None:
    config = carbon.resolve({})
    assert isinstance(config, carbon.CarbonConfig)
    assert (config.region, config.intensity, config.pue, config.year) == ("WORLD", 480.0, 1.0, 2023)
    assert config.emissions_g(3.6e6) == 480.0  # 1 kWh


def test_region_and_pue_from_the_environment() -> None:
    config = carbon.resolve(
        {"OTEL_PYTHON_PROVTEL_CARBON_REGION": "fr", "OTEL_PYTHON_PROVTEL_PUE": "1.5"}
    )
    assert isinstance(config, carbon.CarbonConfig)
    assert (config.region, config.intensity, config.pue) == ("FR", 56.0, 1.5)
    assert config.emissions_g(7.2e6) == pytest.approx(2 * 56 * 1.5)


def test_intensity_override_is_recorded_as_configured() -> None:
    config = carbon.resolve({"OTEL_PYTHON_PROVTEL_CARBON_INTENSITY": "123.5"})
    assert isinstance(config, carbon.CarbonConfig)
    assert config.intensity == 123.5
    assert config.source == "configured (OTEL_PYTHON_PROVTEL_CARBON_INTENSITY)"
    assert config.year is None


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"OTEL_PYTHON_PROVTEL_CARBON_REGION": "atlantis"}, "unknown"),
        ({"OTEL_PYTHON_PROVTEL_PUE": "0.5"}, "below 1.0"),
        ({"OTEL_PYTHON_PROVTEL_PUE": "high"}, "not a number"),
        ({"OTEL_PYTHON_PROVTEL_CARBON_INTENSITY": "-3"}, "below 0.0"),
    ],
)
def test_bad_configuration_gives_a_reason(env: dict[str, str], reason: str) -> None:
    result = carbon.resolve(env)
    assert isinstance(result, str) and reason in result


def test_run_records_emissions_and_how_they_were_computed(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_CARBON_REGION", "DE")
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_PUE", "1.2")
    backend = FakeGpuBackend([FakeGpu("GPU-1")])
    NvmlInstrumentor().instrument(meter_provider=metrics.provider, backend=backend)
    run = activity.begin("run")
    backend.gpus[0].energy_mj = 3_600_000  # 3600 J = 1 Wh
    summary = activity.finish("run", run)
    assert summary["ml.carbon.emissions"] == pytest.approx(0.001 * 381 * 1.2)
    assert summary["ml.carbon.intensity"] == 381.0
    assert summary["ml.carbon.region"] == "DE"
    assert summary["ml.carbon.pue"] == 1.2
    assert summary["ml.carbon.intensity.year"] == 2023
    assert summary["ml.carbon.intensity.source"].startswith("Ember")
    assert summary["ml.carbon.method"] == carbon.METHOD
    assert "ml.carbon.status" not in summary


def test_bad_configuration_is_stated_on_the_run(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_CARBON_REGION", "atlantis")
    NvmlInstrumentor().instrument(
        meter_provider=metrics.provider, backend=FakeGpuBackend([FakeGpu("GPU-1")])
    )
    summary = activity.finish("run", activity.begin("run"))
    assert summary["ml.carbon.status"].startswith("unavailable: unknown")
    assert "ml.carbon.emissions" not in summary


def test_emissions_metric_per_device(
    tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_CARBON_REGION", "SE")
    root = rapl_tree(tmp_path)
    RaplInstrumentor().instrument(meter_provider=metrics.provider, root=root)
    set_energy(root, "intel-rapl:0", 1_000_000 + 36_000_000)  # +36 J = 0.01 Wh
    points = metrics.collect()
    emissions = {a["hw.id"]: (a["ml.carbon.region"], v) for a, v in points["ml.carbon.emissions"]}
    assert emissions["intel-rapl:0"] == ("SE", pytest.approx(36 / 3.6e6 * 41))
    assert emissions["intel-rapl:1"] == ("SE", 0.0)
