"""A user runs a script under ``opentelemetry-instrument`` on this machine (no GPU, no RAPL).

The script opens its run and epochs itself and reports them through
``provtel.instrumentation.activity`` exactly as the PyTorch instrumentation does, so these tests
do not depend on it (``provtel_torch`` is disabled). The PROV document must state GPU and RAPL
energy as unavailable with the reason, and carry process CPU time and memory series.
"""

from __future__ import annotations

import csv
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, run_documents, run_instrumented

from .fakes import rapl_tree

pytestmark = pytest.mark.slow

SCRIPT = """
import os
from pathlib import Path
from opentelemetry import trace
from provtel.instrumentation import activity

fake_rapl = os.environ.get("OTEL_PYTHON_PROVTEL_RAPL_ROOT")

def burn(joules):
    sum(i * i for i in range(200_000))
    if fake_rapl:  # a fake counter that moves like a real one
        path = Path(fake_rapl, "intel-rapl:0", "energy_uj")
        path.write_text(str(int(path.read_text()) + int(joules * 1e6)))

tracer = trace.get_tracer("demo.train")
with tracer.start_as_current_span("train", attributes={"ml.activity": "run"}) as run:
    run_handle = activity.begin("run")
    for epoch in range(2):
        with tracer.start_as_current_span(f"epoch {epoch}", attributes={
                "ml.activity": "epoch", "ml.context": "training", "ml.epoch": epoch}) as span:
            handle = activity.begin("epoch")
            burn(10.0 * (epoch + 1))
            span.set_attributes(activity.finish("epoch", handle))
    run.set_attributes(activity.finish("run", run_handle))
"""


def run(tmp_path: Path, write_script: Any, **env: str) -> tuple[dict[str, Any], Path]:
    script = write_script("demo.py", SCRIPT)
    disabled = env.pop("disabled", "")
    result = run_instrumented(
        script,
        cwd=tmp_path,
        env=clean_env(
            OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(tmp_path / "out"),
            # the end-of-run summary is wanted output; what must be empty is everything else
            OTEL_PYTHON_PROVTEL_SUMMARY="false",
            OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=",".join(
                filter(None, ["provtel_torch", disabled])
            ),
            **env,
        ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # missing hardware is normal: nothing to complain about
    (document,) = run_documents(tmp_path / "out")
    return assert_valid(document), document.parent


def activities(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["prov:label"]: a for a in doc["activity"].values()}


def metric_entities(doc: dict[str, Any], run_dir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for entity in doc.get("entity", {}).values():
        if entity.get("prov:type") == "provml:Metric":
            assert (run_dir / entity["dcterms:identifier"]).is_file()
            assert entity["dcterms:identifier"].startswith("metrics/")
            found[entity["prov:label"]] = entity
    return found


def test_no_gpu_no_rapl_is_stated_with_reasons(tmp_path: Path, write_script: Any) -> None:
    doc, run_dir = run(tmp_path, write_script)
    acts = activities(doc)
    train = acts["train"]
    assert train["otel:ml.energy.gpu.status"] == (
        "unavailable: NVML: NVML Shared Library Not Found"
    )
    assert train["otel:ml.energy.cpu.status"].startswith("unavailable: RAPL: no powercap directory")
    assert train["otel:ml.energy.memory.status"].startswith("unavailable: RAPL: ")
    assert train["otel:ml.energy.method"] == "unavailable"
    assert "otel:ml.energy.total" not in train  # never a zero for what was not measured
    assert train["otel:ml.carbon.status"] == "unavailable: no energy was measured"
    assert train["otel:ml.carbon.region"] == "WORLD"
    assert train["otel:ml.host.cpu.logical_count"] >= 1
    assert train["otel:host.cpu.model.name"]
    assert "NVML Shared Library Not Found" in train["otel:ml.hw.unavailable"]  # a JSON string
    assert not any(k.startswith("otel:ml.energy") for k in acts["epoch 0"])

    metrics = metric_entities(doc, run_dir)
    labels = sorted(metrics)
    cpu = [m for m in labels if m.startswith("process.cpu.time")]
    assert sorted(cpu) == ["process.cpu.time_system", "process.cpu.time_user"]
    assert any(m.startswith("process.memory.usage") for m in labels)
    assert any(m.startswith("system.memory.usage") for m in labels)
    assert not any(m.startswith(("hw.", "ml.carbon")) for m in labels)  # no GPU, no RAPL
    user = metrics["process.cpu.time_user"]
    assert user["otel:unit"] == "s" and user["provtel:last"] > 0
    with open(run_dir / metrics["process.memory.usage"]["dcterms:identifier"]) as f:
        rows = list(csv.DictReader(f))
    assert rows and int(float(rows[-1]["value"])) > 10 << 20  # a Python process's RSS


def test_fake_rapl_tree_gives_energy_per_epoch_and_carbon(
    tmp_path: Path, write_script: Any
) -> None:
    root = rapl_tree(tmp_path / "powercap")
    doc, run_dir = run(
        tmp_path,
        write_script,
        OTEL_PYTHON_PROVTEL_RAPL_ROOT=str(root),
        OTEL_PYTHON_PROVTEL_CARBON_REGION="fr",
    )
    acts = activities(doc)
    assert acts["epoch 0"]["otel:ml.energy.cpu.0"] == 10.0
    assert acts["epoch 1"]["otel:ml.energy.cpu.0"] == 20.0
    assert acts["epoch 1"]["otel:ml.energy.method"] == "counter:rapl"
    train = acts["train"]
    assert train["otel:ml.energy.total"] == 30.0
    assert train["otel:ml.energy.cpu.status"] == "counter:rapl"
    assert train["otel:ml.carbon.emissions"] == pytest.approx(30 / 3.6e6 * 56)
    assert train["otel:ml.carbon.intensity"] == 56.0
    assert train["otel:ml.carbon.intensity.year"] == 2023
    metrics = metric_entities(doc, run_dir)
    energy = metrics["hw.energy_intel-rapl:0_package-0_cpu"]
    assert energy["otel:unit"] == "J" and energy["provtel:last"] == 30.0


def test_each_instrumentor_can_be_disabled(tmp_path: Path, write_script: Any) -> None:
    doc, run_dir = run(
        tmp_path, write_script, disabled="provtel_nvml,provtel_amdsmi,provtel_rapl, provtel_host"
    )
    train = activities(doc)["train"]
    assert not any(
        k.startswith(("otel:ml.energy", "otel:ml.carbon", "otel:ml.host")) for k in train
    )
    assert not any(m.startswith("process.") for m in metric_entities(doc, run_dir))


def test_the_torch_gate_applies_to_every_entry_point_of_the_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why the hardware instrumentors depend on how the `instruments` extra is declared.

    ``opentelemetry-instrument`` checks the *distribution's* ``instruments`` extra for each
    entry point, so while it lists torch, a job without torch gets no hardware readings either.
    """
    import opentelemetry.instrumentation.dependencies as deps

    dist = distribution("provtel-instrumentation")
    requires = [r for r in dist.requires or [] if "extra ==" in r]
    real_version = deps.version

    def without_torch(name: str) -> str:
        if name == "torch":
            raise deps.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(deps, "version", without_torch)
    conflict = get_dist_dependency_conflicts(dist)
    if any("torch" in r and "'instruments'" in r for r in requires):
        assert conflict is not None and "torch" in str(conflict)
    else:
        assert conflict is None
