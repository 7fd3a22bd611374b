"""GPU readings through the scripted backend: counters, resets, NotSupported, lost GPUs, MIG."""

from __future__ import annotations

import time

import pytest

from provtel.instrumentation import activity
from provtel.instrumentation.hardware import NvmlInstrumentor
from provtel.instrumentation.hardware._common import ReadError
from provtel.instrumentation.hardware._runtime import RUNTIME

from .conftest import Metrics
from .fakes import FakeGpu, FakeGpuBackend, lost, not_supported

A, B = "GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000"


def instrument(metrics: Metrics, *gpus: FakeGpu, **kwargs: object) -> FakeGpuBackend:
    backend = FakeGpuBackend(gpus)
    NvmlInstrumentor().instrument(meter_provider=metrics.provider, backend=backend, **kwargs)
    return backend


def by_id(points: list[tuple[dict[str, object], object]]) -> dict[object, object]:
    return {attrs["hw.id"]: value for attrs, value in points}


def test_several_gpus_report_semconv_metrics(metrics: Metrics) -> None:
    instrument(metrics, FakeGpu(A, energy_mj=5_000), FakeGpu(B, energy_mj=9_000, power_w=300.0))
    points = metrics.collect()
    assert by_id(points["hw.power"]) == {A: 100.0, B: 300.0}
    assert by_id(points["hw.gpu.utilization"]) == {A: 0.5, B: 0.5}
    assert by_id(points["hw.gpu.memory.usage"]) == {A: 1 << 30, B: 1 << 30}
    assert by_id(points["hw.gpu.memory.limit"]) == {A: 80 << 30, B: 80 << 30}
    assert by_id(points["ml.hw.gpu.clock.speed"]) == {A: 1.98e9, B: 1.98e9}
    assert by_id(points["ml.process.gpu.memory.usage"]) == {A: 512 << 20, B: 512 << 20}
    temperature = {attrs["hw.parent"]: (attrs, v) for attrs, v in points["hw.temperature"]}
    assert temperature[A][0] == {
        "hw.id": f"{A}:temperature",
        "hw.type": "temperature",
        "hw.parent": A,
        "hw.sensor_location": "gpu",
    }
    for attrs, _ in points["hw.energy"] + points["hw.power"]:
        assert attrs["hw.type"] == "gpu"  # required by the hw.* conventions
    # The cumulative energy starts at instrumentation: nothing used yet.
    assert by_id(points["hw.energy"]) == {A: 0.0, B: 0.0}
    status = {(a["hw.id"], a["hw.state"]): v for a, v in points["hw.status"]}
    assert status == {(A, "ok"): 1, (A, "failed"): 0, (B, "ok"): 1, (B, "failed"): 0}


def test_energy_counter_is_cumulative_and_survives_a_reset(metrics: Metrics) -> None:
    backend = instrument(metrics, FakeGpu(A, energy_mj=1_000_000))
    backend.gpus[0].energy_mj = 1_250_000
    assert by_id(metrics.collect()["hw.energy"]) == {A: 250.0}
    backend.gpus[0].energy_mj = 40_000  # driver reloaded: the counter restarted from zero
    assert by_id(metrics.collect()["hw.energy"]) == {A: 290.0}
    backend.gpus[0].energy_mj = 100_000
    assert by_id(metrics.collect()["hw.energy"]) == {A: 350.0}


def test_energy_per_activity_is_the_counter_difference(metrics: Metrics) -> None:
    backend = instrument(metrics, FakeGpu(A, energy_mj=10_000), FakeGpu(B, energy_mj=0))
    run = activity.begin("run")
    backend.gpus[0].energy_mj += 2_000
    epoch = activity.begin("epoch")
    backend.gpus[0].energy_mj += 3_000
    backend.gpus[1].energy_mj += 1_500
    attrs = activity.finish("epoch", epoch)
    assert attrs == {
        "ml.energy.gpu.0": 3.0,
        "ml.energy.gpu.1": 1.5,
        "ml.energy.total": 4.5,
        "ml.energy.method": "counter:nvml",
    }
    summary = activity.finish("run", run)
    assert summary["ml.energy.gpu.0"] == 5.0 and summary["ml.energy.total"] == 6.5
    assert summary["ml.energy.gpu.status"] == "counter:nvml"
    assert summary["ml.hw.gpu.count"] == 2
    assert summary["ml.hw.gpu.1.id"] == B
    assert summary["ml.hw.gpu.0.model"] == "NVIDIA H100 80GB HBM3"
    assert summary["ml.hw.gpu.0.driver_version"] == "575.57.08"
    assert summary["ml.hw.gpu.0.memory.limit"] == 80 << 30
    assert "ml.hw.unavailable" not in summary


def test_not_supported_drops_that_reading_once_with_the_reason(metrics: Metrics) -> None:
    backend = instrument(
        metrics,
        FakeGpu(A, fail={"power_w": not_supported("Not Supported (nvmlDeviceGetPowerUsage)")}),
        FakeGpu(B),
    )
    for _ in range(3):
        points = metrics.collect()
    assert by_id(points["hw.power"]) == {B: 100.0}  # no zero for A
    assert backend.calls["power_w"] == 1 + 3  # A asked once, B every time
    run = activity.begin("run")
    summary = activity.finish("run", run)
    assert summary["ml.hw.unavailable"] == [
        "hw.power gpu.0: Not Supported (nvmlDeviceGetPowerUsage)"
    ]


def test_gpu_without_energy_counter_is_unavailable_not_zero(metrics: Metrics) -> None:
    instrument(metrics, FakeGpu(A, fail={"energy_mj": not_supported()}), FakeGpu(B))
    assert by_id(metrics.collect()["hw.energy"]) == {B: 0.0}
    run = activity.begin("run")
    summary = activity.finish("run", run)
    assert "ml.energy.gpu.0" not in summary
    assert summary["ml.energy.gpu.0.status"] == "unavailable: Not Supported"
    assert summary["ml.energy.gpu.1"] == 0.0
    assert summary["ml.energy.gpu.status"] == "counter:nvml"


def test_lost_gpu_is_reported_failed_and_keeps_energy_until_the_loss(metrics: Metrics) -> None:
    backend = instrument(metrics, FakeGpu(A), FakeGpu(B))
    run = activity.begin("run")
    backend.gpus[1].energy_mj = 7_000
    metrics.collect()  # B read at 7 J
    backend.gpus[1].fail = {k: lost() for k in ("energy_mj", "power_w", "memory_used")}
    backend.gpus[1].energy_mj = 9_000  # never read: B is gone
    points = metrics.collect()
    assert set(by_id(points["hw.power"])) == {A}
    status = {(a["hw.id"], a["hw.state"]): v for a, v in points["hw.status"]}
    assert status[(B, "failed")] == 1 and status[(B, "ok")] == 0
    calls = dict(backend.calls)
    metrics.collect()
    assert backend.calls["power_w"] == calls["power_w"] + 1  # only A is still read
    summary = activity.finish("run", run)
    assert summary["ml.energy.gpu.1"] == 7.0
    assert summary["ml.energy.gpu.1.status"] == "partial: lost: GPU is lost"
    assert summary["ml.energy.gpu.status"] == "counter:nvml"
    assert "gpu gpu.1: lost: GPU is lost" in summary["ml.hw.unavailable"]


def test_mig_slices_share_the_parent_counter_counted_once(metrics: Metrics) -> None:
    parent = "GPU-cccccccc-0000-0000-0000-000000000000"
    backend = instrument(
        metrics,
        FakeGpu("MIG-11111111", parent_uuid=parent, fail={"utilization": not_supported()}),
        FakeGpu("MIG-22222222", parent_uuid=parent, fail={"utilization": not_supported()}),
    )
    points = metrics.collect()
    assert by_id(points["hw.energy"]) == {parent: 0.0}  # one counter, the physical GPU's
    assert by_id(points["hw.power"]) == {parent: 100.0}
    memory = {a["hw.id"]: a.get("hw.parent") for a, _ in points["hw.gpu.memory.usage"]}
    assert memory == {"MIG-11111111": parent, "MIG-22222222": parent}
    assert "hw.gpu.utilization" not in points or not points["hw.gpu.utilization"]
    run = activity.begin("run")
    backend.gpus[0].energy_mj = 4_000
    summary = activity.finish("run", run)
    assert summary["ml.energy.gpu.0"] == 4.0 and summary["ml.energy.total"] == 4.0
    assert "ml.energy.gpu.1" not in summary  # not counted twice
    assert summary["ml.energy.gpu.0.status"].startswith(f"shared: whole-GPU counter of {parent}")
    assert summary["ml.hw.gpu.1.parent"] == parent


def test_process_enumeration_is_rate_limited(metrics: Metrics) -> None:
    backend = instrument(metrics, FakeGpu(A), FakeGpu(B), process_interval_s=30.0)
    for _ in range(5):
        points = metrics.collect()
    assert backend.calls["process_memory"] == 2  # once per GPU, not once per collection
    assert by_id(points["ml.process.gpu.memory.usage"]) == {A: 512 << 20, B: 512 << 20}


def test_backend_unavailable_is_stated_on_the_run(metrics: Metrics) -> None:
    NvmlInstrumentor().instrument(
        meter_provider=metrics.provider, backend=FakeGpuBackend(unavailable="Driver Not Loaded")
    )
    assert metrics.collect() == {}
    assert RUNTIME.energy_sources == ()
    assert activity.finish("epoch", activity.begin("epoch")) == {}
    summary = activity.finish("run", activity.begin("run"))
    assert summary["ml.energy.gpu.status"] == "unavailable: NVML: Driver Not Loaded"
    assert summary["ml.energy.method"] == "unavailable"
    assert summary["ml.carbon.status"] == "unavailable: no energy was measured"
    assert "ml.carbon.emissions" not in summary


def test_uninstrument_stops_readings_and_closes(metrics: Metrics) -> None:
    backend = instrument(metrics, FakeGpu(A))
    NvmlInstrumentor().uninstrument()
    assert backend.closed
    assert RUNTIME.components == ()
    calls = dict(backend.calls)
    metrics.collect()
    assert backend.calls == calls


def test_sampling_thread_reads_counters_and_stops(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL", "0.01")
    backend = instrument(metrics, FakeGpu(A))
    assert RUNTIME.sampler.running
    before = backend.calls["energy_mj"]
    deadline = time.monotonic() + 10  # generous: the thread ticks every 10 ms
    while backend.calls["energy_mj"] < before + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.calls["energy_mj"] >= before + 3
    NvmlInstrumentor().uninstrument()
    assert not RUNTIME.sampler.running


def test_a_failed_read_is_retried_and_labelled(metrics: Metrics) -> None:
    backend = instrument(metrics, FakeGpu(A, energy_mj=1_000))
    block = activity.begin("step_block")
    backend.gpus[0].energy_mj = 3_000
    metrics.collect()  # read at 3 J
    backend.gpus[0].energy_mj = 4_000
    backend.gpus[0].fail = {"energy_mj": ReadError("Timeout (nvmlDeviceGetTotalEnergyConsumption)")}
    attrs = activity.finish("step_block", block)
    assert attrs["ml.energy.gpu.0"] == 2.0  # up to the last good read, and said so
    assert attrs["ml.energy.gpu.0.status"].startswith("partial: the last read failed")
    block = activity.begin("step_block")
    backend.gpus[0].fail = {}  # transient: read again next time
    attrs = activity.finish("step_block", block)
    assert attrs["ml.energy.gpu.0.status"] == (
        "unavailable: the read at the start of the activity failed"
    )
    assert by_id(metrics.collect()["hw.energy"]) == {A: 3.0}
