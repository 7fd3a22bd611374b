"""RAPL against a fake powercap tree: zones, no double counting, wrap-around, EACCES."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from provtel.instrumentation import activity
from provtel.instrumentation.hardware import RaplInstrumentor, rapl
from provtel.instrumentation.hardware._common import BackendUnavailable
from provtel.instrumentation.hardware.rapl import Rapl

from .conftest import Metrics
from .fakes import rapl_tree, set_energy, write_zone


def test_package_and_dram_zones_only(tmp_path: Path) -> None:
    zones = Rapl(rapl_tree(tmp_path)).open()
    assert [(z.zone, z.name, z.hw_type, z.key) for z in zones] == [
        ("intel-rapl:0", "package-0", "cpu", "cpu.0"),
        ("intel-rapl:0:2", "dram", "memory", "memory.0"),
        ("intel-rapl:1", "package-1", "cpu", "cpu.1"),
        ("intel-rapl:1:0", "dram", "memory", "memory.1"),
    ]  # psys contains the packages, core/uncore are parts of them, MMIO duplicates them


def test_metric_and_activity_energy(tmp_path: Path, metrics: Metrics) -> None:
    root = rapl_tree(tmp_path)
    RaplInstrumentor().instrument(meter_provider=metrics.provider, root=root)
    run = activity.begin("run")
    set_energy(root, "intel-rapl:0", 1_000_000 + 30_000_000)  # +30 J
    set_energy(root, "intel-rapl:0:2", 200_000 + 5_000_000)  # +5 J
    set_energy(root, "intel-rapl:2", 99_000_000_000)  # psys moves too: never counted
    points = metrics.collect()
    energy = {a["hw.id"]: (a["hw.type"], a["hw.name"], v) for a, v in points["hw.energy"]}
    assert energy == {
        "intel-rapl:0": ("cpu", "package-0", 30.0),
        "intel-rapl:0:2": ("memory", "dram", 5.0),
        "intel-rapl:1": ("cpu", "package-1", 0.0),
        "intel-rapl:1:0": ("memory", "dram", 0.0),
    }
    summary = activity.finish("run", run)
    assert summary["ml.energy.cpu.0"] == 30.0 and summary["ml.energy.memory.0"] == 5.0
    assert summary["ml.energy.total"] == 35.0
    assert summary["ml.energy.method"] == "counter:rapl"
    assert summary["ml.energy.cpu.status"] == "counter:rapl"
    assert summary["ml.energy.memory.status"] == "counter:rapl"


def test_wrap_around_uses_max_energy_range(tmp_path: Path, metrics: Metrics) -> None:
    top = 1_000_000_000  # max_energy_range_uj: the counter goes back to 0 after it
    write_zone(tmp_path, "intel-rapl:0", "package-0", top - 2_000_000, top)
    RaplInstrumentor().instrument(meter_provider=metrics.provider, root=tmp_path)
    epoch = activity.begin("epoch")
    set_energy(tmp_path, "intel-rapl:0", 3_000_001)  # wrapped: 2 J to the top, 1 µJ to 0, 3 J
    assert activity.finish("epoch", epoch)["ml.energy.cpu.0"] == pytest.approx(5.000002)
    set_energy(tmp_path, "intel-rapl:0", 4_000_001)
    ((_, value),) = metrics.collect()["hw.energy"]
    assert value == pytest.approx(6.000002)


def test_permission_denied_is_unavailable_with_the_reason(tmp_path: Path, metrics: Metrics) -> None:
    root = rapl_tree(tmp_path)
    real_open = os.open

    def no_energy(path: str, *args: object, **kwargs: object) -> int:
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    # Tests run as root, where chmod 000 denies nothing: EACCES is simulated.
    with mock.patch.object(rapl.os, "open", no_energy):
        RaplInstrumentor().instrument(meter_provider=metrics.provider, root=root)
    assert metrics.collect() == {}
    summary = activity.finish("run", activity.begin("run"))
    status = summary["ml.energy.cpu.status"]
    assert status.startswith("unavailable: RAPL: permission denied reading ")
    assert "intel-rapl:0/energy_uj" in status and "CVE-2020-8694" in status
    assert summary["ml.energy.memory.status"] == status
    assert summary["ml.energy.method"] == "unavailable"


def test_unreadable_later_keeps_the_energy_until_then(tmp_path: Path, metrics: Metrics) -> None:
    root = rapl_tree(tmp_path)
    RaplInstrumentor().instrument(meter_provider=metrics.provider, root=root)
    run = activity.begin("run")
    set_energy(root, "intel-rapl:1", 3_000_000 + 7_000_000)
    metrics.collect()
    (root / "intel-rapl:1" / "energy_uj").unlink()  # e.g. the module was unloaded
    summary = activity.finish("run", run)
    assert summary["ml.energy.cpu.1"] == 7.0
    assert summary["ml.energy.cpu.1.status"].startswith("partial: cannot read ")


def test_no_powercap_on_this_machine(metrics: Metrics) -> None:
    # The real /sys/class/powercap is absent here (a VM): the real failure path.
    if Path(rapl.DEFAULT_ROOT).exists():
        pytest.skip("this machine has a powercap directory")
    RaplInstrumentor().instrument(meter_provider=metrics.provider)
    summary = activity.finish("run", activity.begin("run"))
    assert summary["ml.energy.cpu.status"] == (
        "unavailable: RAPL: no powercap directory /sys/class/powercap"
    )


def test_root_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_RAPL_ROOT", str(rapl_tree(tmp_path)))
    assert len(Rapl().open()) == 4


def test_psys_alone_is_not_a_package(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "psys", 1, 10)
    with pytest.raises(BackendUnavailable, match="no RAPL package zone"):
        Rapl(tmp_path).open()
