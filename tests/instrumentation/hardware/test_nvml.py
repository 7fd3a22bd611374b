"""The NVML backend against patched ``pynvml`` functions, and the real failure path here."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pynvml
import pytest

from provtel.instrumentation import activity
from provtel.instrumentation.hardware import NvmlInstrumentor
from provtel.instrumentation.hardware._common import (
    BackendUnavailable,
    DeviceLost,
    ReadError,
    ReadingUnavailable,
)
from provtel.instrumentation.hardware.describe import hardware_description
from provtel.instrumentation.hardware.gpu import parse_visible_devices
from provtel.instrumentation.hardware.nvml import NvmlBackend

from .conftest import Metrics
from .fakes import FakeNvml, NvmlDevice

U0 = "GPU-0b3f1c2e-1111-2222-3333-444455556666"
U1 = "GPU-7d9a8e6f-1111-2222-3333-444455556666"


@contextmanager
def patched(fake: FakeNvml) -> Iterator[FakeNvml]:
    with mock.patch.multiple(pynvml, **fake.functions()):
        yield fake


def two_gpus() -> FakeNvml:
    return FakeNvml([NvmlDevice(U0), NvmlDevice(U1, name="NVIDIA A100-SXM4-80GB")])


def test_no_driver_on_this_machine_is_unavailable_with_nvmls_reason() -> None:
    # The real pynvml, unpatched: this machine has no NVIDIA driver.
    backend = NvmlBackend()
    with pytest.raises(BackendUnavailable, match="NVML Shared Library Not Found"):
        backend.open()


NO_LIBRARY_PROBE = """
import ctypes, json, sys
from provtel.instrumentation.hardware._common import BackendUnavailable
from provtel.instrumentation.hardware.nvml import NvmlBackend
try:
    ctypes.CDLL("libnvidia-ml.so.1")
    library = True
except OSError:
    library = False
try:
    NvmlBackend().open()
    reason = None
except BackendUnavailable as exc:
    reason = str(exc)
print(json.dumps({"library": library, "reason": reason, "pynvml": "pynvml" in sys.modules}))
"""


def test_without_nvidias_library_pynvml_is_not_imported() -> None:
    # A fresh process, as under opentelemetry-instrument: on a machine without NVIDIA's
    # library the reason is NVML's own, found without importing the 5,000-line binding.
    result = subprocess.run(
        [sys.executable, "-c", NO_LIBRARY_PROBE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    if seen["library"]:  # a machine with the driver: pynvml does the work
        assert seen["pynvml"]
    else:
        assert seen == {
            "library": False,
            "reason": "NVML Shared Library Not Found",
            "pynvml": False,
        }


def test_no_driver_through_the_instrumentor(metrics: Metrics) -> None:
    NvmlInstrumentor().instrument(meter_provider=metrics.provider)
    assert metrics.collect() == {}  # no GPU metric at all, no zeros
    summary = activity.finish("run", activity.begin("run"))
    assert summary["ml.energy.gpu.status"] == "unavailable: NVML: NVML Shared Library Not Found"
    assert summary["ml.hw.unavailable"] == ["gpu (nvml): NVML Shared Library Not Found"]


def test_driver_not_loaded_is_unavailable() -> None:
    with patched(FakeNvml([], init_error=pynvml.NVMLError_DriverNotLoaded)):
        with pytest.raises(BackendUnavailable, match="Driver Not Loaded"):
            NvmlBackend(visible_devices=None).open()


def test_all_devices_when_cuda_visible_devices_is_unset() -> None:
    with patched(two_gpus()):
        backend = NvmlBackend(visible_devices=None)
        gpus = backend.open()
    assert [(g.index, g.uuid, g.model) for g in gpus] == [
        (0, U0, "NVIDIA A100-SXM4-40GB"),
        (1, U1, "NVIDIA A100-SXM4-80GB"),
    ]
    assert gpus[0].driver_version == "575.57.08" and gpus[0].memory_limit == 40 << 30


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("1", [U1]),
        ("1,0", [U1, U0]),
        (U1, [U1]),
        ("GPU-7d9a", [U1]),  # a unique prefix, as CUDA accepts
        ("0,7,1", [U0]),  # CUDA stops at the first invalid entry
        ("", []),
        ("-1", []),
    ],
)
def test_cuda_visible_devices_limits_the_gpus(visible: str, expected: list[str]) -> None:
    with patched(two_gpus()):
        gpus = NvmlBackend(visible_devices=visible).open()
    assert [g.uuid for g in gpus] == expected
    assert [g.index for g in gpus] == list(range(len(expected)))  # the job's ordinals


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with patched(two_gpus()):
        assert [g.uuid for g in NvmlBackend().open()] == [U1]
    assert parse_visible_devices(None) is None


def test_readings_and_units() -> None:
    fake = FakeNvml([NvmlDevice(U0, processes=[(4242, 123 << 20), (99, 1)])])
    with patched(fake):
        backend = NvmlBackend(visible_devices=None)
        backend.open()
        assert backend.energy_mj(0) == 1_000_000
        assert backend.power_w(0) == 250.0
        assert backend.utilization(0) == 0.87
        assert backend.memory_used(0) == 3 << 30
        assert backend.temperature_c(0) == 55.0
        assert backend.sm_clock_hz(0) == 1.41e9
        assert backend.process_memory(0, 4242) == 123 << 20
        assert backend.process_memory(0, 1) is None


def test_nvml_errors_are_translated() -> None:
    device = NvmlDevice(
        U0,
        processes=[(4242, None)],
        errors={
            "nvmlDeviceGetPowerUsage": pynvml.NVMLError_NotSupported,
            "nvmlDeviceGetClockInfo": pynvml.NVMLError_NoPermission,
            "nvmlDeviceGetTotalEnergyConsumption": pynvml.NVMLError_GpuIsLost,
            "nvmlDeviceGetUtilizationRates": pynvml.NVMLError_Timeout,
            "nvmlDeviceGetTemperatureV": pynvml.NVMLError_FunctionNotFound,
        },
    )
    with patched(FakeNvml([device])) as fake:
        backend = NvmlBackend(visible_devices=None)
        backend.open()
        with pytest.raises(ReadingUnavailable, match="Not Supported"):
            backend.power_w(0)
        with pytest.raises(ReadingUnavailable, match="Insufficient Permissions"):
            backend.sm_clock_hz(0)
        with pytest.raises(DeviceLost, match="GPU is lost"):
            backend.energy_mj(0)
        with pytest.raises(ReadError, match="Timeout"):
            backend.utilization(0)
        with pytest.raises(ReadingUnavailable, match="per-process"):
            backend.process_memory(0, 4242)
        # An old driver without nvmlDeviceGetTemperatureV: the deprecated call is used.
        assert backend.temperature_c(0) == 55.0
        assert backend.temperature_c(0) == 55.0
    assert fake.calls["nvmlDeviceGetTemperatureV"] == 1


def test_mig_slice_by_uuid_reads_the_parent_for_energy() -> None:
    mig_a, mig_b = NvmlDevice("MIG-aaaa1111", total=10 << 30), NvmlDevice("MIG-bbbb2222")
    parent = NvmlDevice(U0, energy_mj=5_000_000, migs=[mig_a, mig_b])
    with patched(FakeNvml([parent])) as fake:
        backend = NvmlBackend(visible_devices="MIG-aaaa1111,MIG-bbbb")
        gpus = backend.open()
        assert [(g.uuid, g.parent_uuid) for g in gpus] == [
            ("MIG-aaaa1111", U0),
            ("MIG-bbbb2222", U0),
        ]
        assert gpus[0].memory_limit == 10 << 30  # the slice's memory
        assert backend.energy_mj(0) == 5_000_000  # the physical GPU's counter
        with pytest.raises(ReadingUnavailable, match="MIG"):
            backend.utilization(0)
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1


def test_end_to_end_with_patched_pynvml(metrics: Metrics) -> None:
    fake = FakeNvml(
        [
            NvmlDevice(U0, errors={"nvmlDeviceGetPowerUsage": pynvml.NVMLError_NotSupported}),
            NvmlDevice(U1, energy_mj=2_000_000),
        ]
    )
    with patched(fake):
        NvmlInstrumentor().instrument(meter_provider=metrics.provider)
        run = activity.begin("run")
        fake.devices[0].energy_mj += 60_000
        fake.devices[1].energy_mj += 40_000
        points = metrics.collect()
        summary = activity.finish("run", run)
        NvmlInstrumentor().uninstrument()
    assert {a["hw.id"]: v for a, v in points["hw.energy"]} == {U0: 60.0, U1: 40.0}
    assert {a["hw.id"] for a, _ in points["hw.power"]} == {U1}
    assert summary["ml.energy.total"] == 100.0
    assert summary["ml.hw.gpu.0.id"] == U0
    assert summary["ml.hw.unavailable"] == [
        "hw.power gpu.0: Not Supported (nvmlDeviceGetPowerUsage)"
    ]
    # World average by default: 100 J = 1/36000 kWh at 480 g/kWh, PUE 1.
    assert summary["ml.carbon.emissions"] == pytest.approx(100 / 3.6e6 * 480)
    assert summary["ml.carbon.region"] == "WORLD"


def test_hardware_description_for_a_resource() -> None:
    with patched(two_gpus()):
        attrs = hardware_description()
    assert attrs["ml.hw.gpu.count"] == 2
    assert attrs["ml.hw.gpu.1.id"] == U1 and attrs["ml.hw.gpu.1.vendor"] == "NVIDIA"
    assert attrs["ml.host.cpu.logical_count"] >= 1
    assert "ml.hw.gpu.count" not in hardware_description()  # no driver here
