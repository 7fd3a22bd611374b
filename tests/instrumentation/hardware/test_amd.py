"""AMD GPUs through a fake ``amdsmi`` module (no ROCm here)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from provtel.instrumentation import activity
from provtel.instrumentation.hardware import AmdSmiInstrumentor
from provtel.instrumentation.hardware._runtime import RUNTIME
from provtel.instrumentation.hardware.amd import import_amdsmi

from .conftest import Metrics


class AmdSmiException(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"AMD SMI error {code}")
        self.err_code = code


def fake_amdsmi(energy: list[int]) -> Any:
    """Two MI300X; the second does not report power (AMDSMI_STATUS_NOT_SUPPORTED = 2)."""

    def power(handle: int) -> dict[str, Any]:
        if handle == 1:
            raise AmdSmiException(2)
        return {"current_socket_power": 550, "average_socket_power": 540}

    return SimpleNamespace(
        AmdSmiException=AmdSmiException,
        amdsmi_init=lambda: None,
        amdsmi_shut_down=lambda: None,
        amdsmi_get_processor_handles=lambda: [0, 1],
        amdsmi_get_gpu_device_uuid=lambda h: f"amd-uuid-{h}",
        amdsmi_get_gpu_asic_info=lambda h: {"market_name": "AMD Instinct MI300X"},
        amdsmi_get_gpu_driver_info=lambda h: {"driver_version": "6.8.5"},
        amdsmi_get_gpu_memory_total=lambda h, kind: 192 << 30,
        amdsmi_get_gpu_memory_usage=lambda h, kind: 10 << 30,
        amdsmi_get_energy_count=lambda h: {
            "energy_accumulator": energy[h],
            "counter_resolution": 15.3,  # µJ per count
            "timestamp": 0,
        },
        amdsmi_get_power_info=power,
        amdsmi_get_gpu_activity=lambda h: {"gfx_activity": 75, "umc_activity": 10},
        amdsmi_get_temp_metric=lambda h, sensor, metric: 48,
        amdsmi_get_clock_info=lambda h, kind: {"clk": 2100, "min_clk": 500, "max_clk": 2100},
        amdsmi_get_gpu_process_list=lambda h: [],
    )


def test_not_installed_records_nothing(metrics: Metrics) -> None:
    assert import_amdsmi() is None  # no ROCm on this machine
    AmdSmiInstrumentor().instrument(meter_provider=metrics.provider)
    assert RUNTIME.components == ()  # not even "unavailable": no AMD stack, nothing to say


def test_energy_and_readings(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1,0")
    energy = [1_000_000, 2_000_000]
    AmdSmiInstrumentor().instrument(meter_provider=metrics.provider, amdsmi=fake_amdsmi(energy))
    run = activity.begin("run")
    energy[1] += 100_000  # 100k counts x 15.3 µJ = 1.53 J on the job's gpu.0
    points = metrics.collect()
    assert {a["hw.id"]: v for a, v in points["hw.energy"]} == {
        "amd-uuid-1": pytest.approx(1.53),
        "amd-uuid-0": 0.0,
    }
    assert {a["hw.id"] for a, _ in points["hw.power"]} == {"amd-uuid-0"}
    assert {a["hw.id"]: v for a, v in points["hw.gpu.utilization"]}["amd-uuid-1"] == 0.75
    summary = activity.finish("run", run)
    assert summary["ml.energy.gpu.0"] == pytest.approx(1.53)
    assert summary["ml.energy.method"] == "counter:amdsmi"
    assert summary["ml.hw.gpu.0.model"] == "AMD Instinct MI300X"
    assert summary["ml.hw.gpu.0.vendor"] == "AMD"
    assert summary["ml.hw.unavailable"] == [
        "hw.power gpu.0: AMD SMI error 2 (amdsmi_get_power_info)"
    ]
