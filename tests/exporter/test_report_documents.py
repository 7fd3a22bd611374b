"""`provtel report` on documents the exporter's own store writes: torn series rows after a crash,
a recovered (incomplete) run, a run with no training steps, NaN losses, nested evaluation and
checkpoints inside steps. Fast: no training, spans built as the torch instrumentation sends
them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.store import RunStore, create_run_dir, recover
from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.report.analysis import analyse
from provtel.exporter.report.document import load, read_columns
from tests.support import provtel_cli

T0 = 1_800_000_000_000_000_000
MS = 1_000_000


def _span(span_id: str, parent: str | None, name: str, start: int, end: int, **attrs: Any) -> dict:
    return {
        "trace_id": "c" * 32,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": "INTERNAL",
        "start": start,
        "end": end,
        "status": "UNSET",
        "status_description": None,
        "attributes": attrs,
        "events": [],
        "links": [],
        "scope": {"name": "provtel.instrumentation.torch", "version": "0.1.0"},
        "resource": {"service.name": "unit"},
    }


def _block(span_id: str, parent: str, first: int, starts: list[int], **series: list[float]) -> dict:
    end = starts[-1] + int(series["duration"][-1] * 1e9)
    return _span(
        span_id,
        parent,
        "ml.step_block",
        starts[0],
        end,
        **{
            "ml.activity": "step_block",
            "ml.context": "training",
            "ml.epoch": 0,
            "ml.step.first": first,
            "ml.step.count": len(starts),
            "ml.step.start_time": starts,
            **{f"ml.step.{k}": v for k, v in series.items()},
        },
    )


def _run(tmp_path: Path, finish: bool = True) -> Path:
    """10 steps of 100 ms (20 ms data wait, 30 backward, 10 optimizer); a 40 ms checkpoint
    inside step 4 (after its optimizer step) and a 100 ms evaluation pass after the epoch."""
    store = RunStore(create_run_dir(tmp_path, "unit"))
    starts = [T0 + 1000 * MS + i * 100 * MS for i in range(10)]
    losses = [1.0 / (i + 1) for i in range(10)]
    losses[3] = math.nan
    epoch_end = starts[-1] + 100 * MS
    spans = [
        _block(
            "00000000000000b1",
            "00000000000000e1",
            0,
            starts,
            duration=[0.1] * 10,
            data_wait=[0.02] * 10,
            backward=[0.03] * 10,
            optimizer=[0.01] * 10,
            loss=losses,
            batch_size=[8] * 10,
        ),
        _span(
            "00000000000000c1",
            "00000000000000a1",
            "ml.checkpoint.save",
            starts[4] + 55 * MS,
            starts[4] + 95 * MS,
            **{
                "ml.activity": "checkpoint",
                "ml.checkpoint.operation": "save",
                "file.path": "/x/c.pt",
                "file.size": 10,
                "ml.checkpoint.digest": "sha256:" + "0" * 64,
            },
        ),
        _span(
            "00000000000000e1",
            "00000000000000a1",
            "ml.epoch",
            starts[0],
            epoch_end,
            **{
                "ml.activity": "epoch",
                "ml.context": "training",
                "ml.epoch": 0,
                "ml.dataset.name": "d",
                "ml.dataset.size": 80,
            },
        ),
        _span(
            "00000000000000f1",
            "00000000000000a1",
            "ml.evaluation",
            epoch_end,
            epoch_end + 100 * MS,
            **{
                "ml.activity": "evaluation",
                "ml.context": "validation",
                "ml.epoch": 0,
                "ml.pass.index": 0,
                "ml.eval.loss": 0.25,
                "ml.eval.batches": 2,
            },
        ),
    ]
    store.add_spans(spans)
    if not finish:
        store.close()
        return store.dir
    store.add_spans(
        [
            _span(
                "00000000000000a1",
                None,
                "ml.run",
                T0,
                epoch_end + 400 * MS,
                **{"ml.activity": "run", "ml.run.name": "unit", "ml.hparam.lr": 0.1},
            )
        ]
    )
    return store.finalize().parent


def test_phases_partition_the_wall_time_exactly(tmp_path: Path) -> None:
    folder = _run(tmp_path)
    assert_valid(folder / "prov.json")
    (rank,) = analyse(load(folder))["ranks"]
    p = rank["phases_s"]
    assert rank["wall_s"] == pytest.approx(1.0 + 1.0 + 0.1 + 0.3)
    assert p["data_wait"] == pytest.approx(0.2)
    assert p["backward"] == pytest.approx(0.3)
    assert p["optimizer"] == pytest.approx(0.1)
    assert p["checkpoint"] == pytest.approx(0.04)
    # the checkpoint ran inside step 4: it is taken out of that step's forward+loss
    assert p["forward_loss"] == pytest.approx(0.4 - 0.04)
    assert p["evaluation"] == pytest.approx(0.1)
    assert p["other"] == pytest.approx(1.0 + 0.3)  # before the first step, after the pass
    assert sum(p.values()) == pytest.approx(rank["wall_s"])
    assert rank["verdict"]["label"] == "compute-bound"
    assert rank["loss"]["final"] == pytest.approx(0.1) and rank["loss"]["min"] == pytest.approx(0.1)
    assert rank["throughput"]["samples_per_s"] == pytest.approx(80.0)
    (ev,) = rank["evaluations"]
    assert ev["results"] == {"loss": 0.25}


def test_a_torn_last_row_is_left_out(tmp_path: Path) -> None:
    folder = _run(tmp_path)
    path = folder / "metrics" / "duration_training.csv"
    text = path.read_text()
    path.write_text(text + "10,0,0.1")  # a writer killed mid-row
    cols = read_columns(path, ("step", "value"))
    assert cols.get("step") == [float(i) for i in range(10)]
    assert len(analyse(load(folder))["ranks"][0]["timeline"]["t_s"]) == 10


def test_a_recovered_run_says_it_is_incomplete(tmp_path: Path) -> None:
    folder = _run(tmp_path, finish=False)
    recover(folder)
    report = analyse(load(folder))
    assert report["incomplete"] is True
    text = provtel_cli("report", folder)
    assert text.returncode == 0, text.stderr
    assert "did not finish" in text.stdout


def test_a_run_without_steps_has_no_verdict(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "empty"))
    store.add_spans(
        [_span("00000000000000a1", None, "ml.run", T0, T0 + 10**9, **{"ml.activity": "run"})]
    )
    folder = store.finalize().parent
    result = provtel_cli("report", folder, "--json")
    assert result.returncode == 0, result.stderr
    (rank,) = json.loads(result.stdout)["ranks"]
    assert rank["verdict"]["label"] == "no training steps recorded"
    assert rank["phases_s"]["other"] == pytest.approx(1.0)
    summary = provtel_cli("report", "--latest", tmp_path, "--summary")
    assert summary.stdout.startswith(f"provtel: {folder}\n")
    assert "verdict: no training steps recorded" in summary.stdout


def test_report_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = provtel_cli("report", tmp_path / "nope")
    assert result.returncode == 2
    assert "no such run folder" in result.stderr


def test_energy_per_phase_and_device_carbon_and_power_timeline(tmp_path: Path) -> None:
    """A run measured on a GPU (as the NVML instrumentor records it): energy per device on the
    run, epoch and evaluation spans, carbon on the run, ``hw.power`` readings as a series."""
    store = RunStore(create_run_dir(tmp_path, "gpu"))
    energy = {"ml.energy.gpu.0": 900.0, "ml.energy.cpu.0": 100.0, "ml.energy.total": 1000.0}
    store.add_spans(
        [
            _span(
                "00000000000000e1",
                "00000000000000a1",
                "ml.epoch",
                T0 + 1,
                T0 + 5 * 10**9,
                **{
                    "ml.activity": "epoch",
                    "ml.context": "training",
                    "ml.epoch": 0,
                    "ml.energy.gpu.0": 600.0,
                    "ml.energy.cpu.0": 60.0,
                    "ml.energy.total": 660.0,
                },
            ),
            _span(
                "00000000000000f1",
                "00000000000000a1",
                "ml.evaluation",
                T0 + 5 * 10**9,
                T0 + 6 * 10**9,
                **{
                    "ml.activity": "evaluation",
                    "ml.context": "validation",
                    "ml.energy.gpu.0": 100.0,
                    "ml.energy.cpu.0": 10.0,
                    "ml.energy.total": 110.0,
                },
            ),
            _span(
                "00000000000000a1",
                None,
                "ml.run",
                T0,
                T0 + 8 * 10**9,
                **{
                    "ml.activity": "run",
                    **energy,
                    "ml.energy.method": "counter:nvml,counter:rapl",
                    "ml.energy.gpu.status": "counter:nvml",
                    "ml.carbon.emissions": 0.0667,
                    "ml.carbon.intensity": 240.0,
                    "ml.carbon.region": "FR",
                    "ml.carbon.intensity.source": "test table",
                    "ml.carbon.pue": 1.0,
                    "ml.carbon.method": "location-based",
                    "ml.hw.gpu.count": 1,
                    "ml.hw.gpu.0.model": "NVIDIA H200",
                    "ml.hw.gpu.0.memory.limit": 2**37,
                },
            ),
        ]
    )
    store.add_metric_points(
        [
            {
                "resource": {"service.name": "unit"},
                "scope": {"name": "nvml", "version": None},
                "name": "hw.power",
                "unit": "W",
                "description": "Power.",
                "type": "gauge",
                "attributes": {"hw.id": "GPU-0"},
                "start": None,
                "time": T0 + i * 10**9,
                "value": 100.0 + i,
            }
            for i in range(8)
        ]
    )
    folder = store.finalize().parent
    assert_valid(folder / "prov.json")
    report = analyse(load(folder))
    assert report["energy"]["devices_j"] == {"gpu.0": 900.0, "cpu.0": 100.0, "total": 1000.0}
    phases = report["ranks"][0]["energy_phases_j"]
    assert phases["training"]["total"] == 660.0 and phases["evaluation"]["total"] == 110.0
    assert phases["other"]["total"] == pytest.approx(230.0)
    assert report["carbon"]["emissions_g"] == pytest.approx(0.0667)
    (power,) = report["power"]
    assert power["y"] == [100.0 + i for i in range(8)]
    assert power["x"] == pytest.approx([float(i) for i in range(8)])
    text = provtel_cli("report", folder).stdout
    assert "energy: 1.00 kJ (cpu.0 100.0 J, gpu.0 900.0 J; counter:nvml,counter:rapl)" in text
    assert "carbon: 0.0667 gCO2eq (location-based; intensity 240 gCO2eq/kWh for FR" in text
    assert "energy by phase: training 660.0 J, evaluation 110.0 J, other 230.0 J" in text
    assert "GPU 0: NVIDIA H200 128.0 GiB" in text
    html = tmp_path / "r.html"
    assert provtel_cli("report", folder, "--html", html).returncode == 0
    assert "<figcaption>Power and energy</figcaption>" in html.read_text()
