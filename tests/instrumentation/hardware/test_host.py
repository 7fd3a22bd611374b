"""Process and system metrics with current semantic conventions; silence in forked children."""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import psutil
import pytest

from provtel.instrumentation import activity
from provtel.instrumentation.hardware import HostInstrumentor, NvmlInstrumentor
from provtel.instrumentation.hardware._runtime import RUNTIME
from provtel.instrumentation.hardware.host import HostCollector

from .conftest import Metrics
from .fakes import FakeGpu, FakeGpuBackend


def test_semconv_names_and_attributes(metrics: Metrics) -> None:
    HostInstrumentor().instrument(meter_provider=metrics.provider)
    sum(range(200_000))
    points = metrics.collect()
    assert {a["cpu.mode"] for a, _ in points["process.cpu.time"]} == {"user", "system"}
    ((attrs, rss),) = points["process.memory.usage"]
    assert attrs == {} and abs(rss - psutil.Process().memory_info().rss) < 64 << 20
    ((_, utilization),) = points["process.cpu.utilization"]
    assert 0.0 <= utilization <= 1.0
    assert points["process.thread.count"][0][1] >= 1
    assert points["process.memory.virtual"][0][1] >= rss
    states = {a["system.memory.state"] for a, _ in points["system.memory.usage"]}
    assert {"used", "free"} <= states
    assert points["system.memory.limit"][0][1] == psutil.virtual_memory().total
    for name in points:  # none of opentelemetry-instrumentation-system-metrics' old keys
        for attrs, _ in points[name]:
            assert not {"state", "type", "cpu"} & set(attrs), name


class FakePsutil:
    """Scripted system CPU times, so utilisation does not depend on timing."""

    def __init__(self) -> None:
        self.times = SimpleNamespace(
            user=100.0, nice=0.0, system=50.0, idle=800.0, iowait=10.0, irq=1.0, softirq=1.0,
            steal=0.0,
        )  # fmt: skip

    def Process(self) -> psutil.Process:
        return psutil.Process()

    def cpu_times(self) -> SimpleNamespace:
        return SimpleNamespace(**vars(self.times))

    def virtual_memory(self) -> SimpleNamespace:
        return SimpleNamespace(total=8 << 30, used=3 << 30, free=4 << 30, cached=1 << 30)


def test_system_cpu_utilization_by_mode(metrics: Metrics) -> None:
    fake = FakePsutil()
    HostInstrumentor().instrument(meter_provider=metrics.provider, psutil=fake)
    fake.times.user += 3.0
    fake.times.system += 1.0
    fake.times.idle += 5.0
    fake.times.softirq += 1.0
    points = metrics.collect()
    modes = {a["cpu.mode"]: v for a, v in points["system.cpu.utilization"]}
    assert modes == pytest.approx(
        {"user": 0.3, "nice": 0.0, "system": 0.1, "idle": 0.5, "iowait": 0.0,
         "interrupt": 0.1, "steal": 0.0}
    )  # fmt: skip
    assert "system.cpu.utilization" not in metrics.collect()  # no time passed: no value
    memory = {a["system.memory.state"]: v for a, v in points["system.memory.usage"]}
    assert memory == {"used": 3 << 30, "free": 4 << 30, "cached": 1 << 30}  # no buffers: absent


def test_host_description_on_the_run(metrics: Metrics) -> None:
    HostInstrumentor().instrument(meter_provider=metrics.provider)
    summary = activity.finish("run", activity.begin("run"))
    assert summary["ml.host.cpu.logical_count"] == os.cpu_count()
    assert summary["ml.host.memory.size"] == psutil.virtual_memory().total
    assert summary["host.cpu.model.name"]
    assert summary["ml.host.cpu.physical_count"] >= 1


def test_without_psutil_it_says_so() -> None:
    real = sys.modules.get("psutil")
    sys.modules["psutil"] = None  # type: ignore[assignment]
    try:
        collector = HostCollector(None)
    finally:
        sys.modules["psutil"] = real  # type: ignore[assignment]
    assert collector.unavailable() == ["process.*, system.* (host): psutil is not installed"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_records_nothing(metrics: Metrics) -> None:
    HostInstrumentor().instrument(meter_provider=metrics.provider)
    NvmlInstrumentor().instrument(
        meter_provider=metrics.provider, backend=FakeGpuBackend([FakeGpu("GPU-1")])
    )
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker
        try:
            os.close(read)
            collector = next(c for c in RUNTIME.components if isinstance(c, HostCollector))
            observed = list(collector._observe_rss(None))  # type: ignore[arg-type]
            begin = activity.begin("step_block")
            result = {
                "observed": len(observed),
                "attrs": activity.finish("step_block", begin),
                "thread": RUNTIME.sampler.running,
            }
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        result = json.loads(f.read())
    os.waitpid(pid, 0)
    assert result == {"observed": 0, "attrs": {}, "thread": False}
    # The parent goes on as before.
    assert metrics.collect()["process.memory.usage"]


def test_multiprocessing_children_record_nothing(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How a spawned DataLoader worker is started (multiprocessing.spawn.get_command_line).
    argv = [sys.executable, "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"]
    monkeypatch.setattr(sys, "orig_argv", [*argv, "--multiprocessing-fork"])
    HostInstrumentor().instrument(meter_provider=metrics.provider)
    assert RUNTIME.components == ()
    assert metrics.collect() == {}
