"""PyTorch training scripts run under ``opentelemetry-instrument`` as a user runs them.

Each script in ``scripts/`` trains a tiny model in one of the ways the PyTorch instrumentation
must understand and writes what it computed (the loss of every step, final parameters) to
``$RESULT``. Every run must leave exactly one valid PROV document holding what the case implies:
epochs and evaluation passes with their contexts, every step's loss in the ``loss`` series
(equal to the script's, float for float), the checkpoint chain and the hyperparameters. The
same script run without instrumentation must end with bit-identical parameters (those plain runs
are forked from one process that imported torch once: the ``plain_runner`` fixture).

DataLoader worker processes (fork, spawn, forkserver, persistent) are covered by
``test_loader_workers.py``; the demo's training loader uses persistent fork workers here too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from provtel.exporter.prov.validate import assert_valid
from tests.integration.plain_runs import PlainRunner
from tests.support import activities_of, clean_env, run_documents, run_instrumented

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"
DEMO = ROOT / "examples" / "train.py"

#: case -> (script, arguments)
CASES: dict[str, tuple[Path, tuple[str, ...]]] = {
    "manual_batching": (SCRIPTS / "manual_batching.py", ()),
    "no_optimizer": (SCRIPTS / "no_optimizer.py", ()),
    "lbfgs": (SCRIPTS / "lbfgs.py", ()),
    "accumulation": (SCRIPTS / "accumulation.py", ()),
    "accumulation_no_loader": (SCRIPTS / "accumulation.py", ("--no-loader",)),
    "gan": (SCRIPTS / "gan.py", ()),
    "gan_no_loader": (SCRIPTS / "gan.py", ("--no-loader",)),
    "amp": (SCRIPTS / "amp.py", ()),
    "compiled": (SCRIPTS / "compiled.py", ()),
    "two_loops": (SCRIPTS / "two_loops.py", ()),
    "exception": (SCRIPTS / "exception.py", ()),
    "demo": (DEMO, ("--epochs", "2", "--workers", "2", "--checkpoints", "ckpt")),
}
#: cases whose script fails on purpose
FAILING = {"exception": 1}


@dataclass
class Run:
    """One run of a case: its folder, process and, when instrumented, its document."""

    cwd: Path
    process: subprocess.CompletedProcess[str]
    result: dict[str, Any]
    document: Path | None = None
    doc: dict[str, Any] | None = None

    # -- reading the document ------------------------------------------------------------------
    @property
    def prov(self) -> dict[str, Any]:
        assert self.doc is not None
        return self.doc

    def activities(self, kind: str) -> list[dict[str, Any]]:
        """Activities of ``prov:type`` ``provtel:<kind>``, in start order."""
        return activities_of(self.prov, kind)

    def contexts(self, kind: str) -> list[str]:
        return [a.get("yprov:context") for a in self.activities(kind)]

    @property
    def run(self) -> dict[str, Any]:
        (run,) = self.activities("Run")
        return run

    def hparams(self) -> dict[str, Any]:
        return {
            e["prov:label"]: e["prov:value"]
            for e in self.prov["entity"].values()
            if e["prov:type"] == "provml:HyperParameter"
        }

    def metric(self, label: str, context: str = "training") -> dict[str, Any] | None:
        found = [
            e
            for e in self.prov["entity"].values()
            if e["prov:type"] == "provml:Metric"
            and e["prov:label"] == label
            and e.get("yprov:context") == context
        ]
        assert len(found) <= 1, found
        return found[0] if found else None

    def series(self, label: str, context: str = "training") -> list[dict[str, str]]:
        """Rows of a per-step series file (step, epoch, value, timestep, time_unix_nano)."""
        metric = self.metric(label, context)
        assert metric is not None, f"no {label!r} series in context {context!r}"
        assert self.document is not None
        with open(self.document.parent / metric["dcterms:identifier"], encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert metric["provtel:count"] == len(rows)
        return rows

    def values(self, label: str, context: str = "training") -> list[float]:
        rows = self.series(label, context)
        steps = [int(r["step"]) for r in rows]
        # every step once, in order (``step`` is global: evaluation batches are counted too)
        assert steps == sorted(set(steps))
        return [float(r["value"]) for r in rows]  # repr-written floats parse back exactly

    def checkpoints(self) -> list[tuple[str, dict[str, Any]]]:
        return sorted(
            (k, e)
            for k, e in self.prov["entity"].items()
            if k.startswith("run:checkpoint_") and e["prov:type"] == "provml:Model"
        )

    def derivations(self) -> set[tuple[str, str]]:
        return {
            (d["prov:generatedEntity"], d["prov:usedEntity"])
            for d in self.prov.get("wasDerivedFrom", {}).values()
        }


_runs: dict[tuple[str, bool], Run] = {}


def _execute(case: str, instrumented: bool, base: Path, plain: PlainRunner) -> Run:
    script, args = CASES[case]
    cwd = base / f"{case}-{'instrumented' if instrumented else 'plain'}"
    cwd.mkdir()
    output = cwd / "prov"
    env = clean_env(RESULT=str(cwd / "result.json"), OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(output))
    if instrumented:
        process = run_instrumented(script, *args, cwd=cwd, env=env)
    else:  # ``python script args...``, forked from a process that imported torch once
        process = plain.run(script, *args, cwd=cwd, env=env)
    assert process.returncode == FAILING.get(case, 0), process.stderr[-3000:]
    result_file = cwd / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    run = Run(cwd, process, result)
    if instrumented:
        (run.document,) = run_documents(output)  # one run folder: nothing from any other process
        run.doc = assert_valid(run.document)
    else:
        assert not output.exists()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, plain_runner: PlainRunner):  # type: ignore[no-untyped-def]
    """``runs(case, instrumented=True)``: the run of a case, made once per module."""
    base = tmp_path_factory.mktemp("torch-scripts")

    def get(case: str, instrumented: bool = True) -> Run:
        key = (case, instrumented)
        if key not in _runs:
            _runs[key] = _execute(case, instrumented, base, plain_runner)
        return _runs[key]

    yield get
    _runs.clear()


# -- every case ---------------------------------------------------------------------------------

SCRIPTED = [c for c in CASES if c != "demo"]


@pytest.mark.parametrize("case", SCRIPTED)
def test_every_step_loss_is_recorded_exactly(runs, case: str) -> None:  # type: ignore[no-untyped-def]
    run = runs(case)
    expected = run.result["losses"]
    assert expected, "the script computed losses"
    assert run.values("loss") == expected
    assert run.values("duration") and len(run.values("duration")) == len(expected)
    # evaluation batches' losses are their own series, one row per batch that computed one
    for context in ("validation", "test"):
        passes = [a for a in run.activities("Evaluation") if a["yprov:context"] == context]
        batches = sum(a.get("otel:ml.eval.batches", 0) for a in passes)
        metric = run.metric("loss", context)
        assert (metric["provtel:count"] if metric else 0) == batches


@pytest.mark.parametrize("case", SCRIPTED)
def test_training_is_bit_identical_without_instrumentation(runs, case: str) -> None:  # type: ignore[no-untyped-def]
    instrumented, plain = runs(case), runs(case, instrumented=False)
    assert instrumented.result["losses"] == plain.result["losses"]
    assert instrumented.result["params"].keys() == plain.result["params"].keys()
    for name, saved in plain.result["params"].items():
        other = instrumented.result["params"][name]
        assert other["hex"] == saved["hex"], name  # the same bytes
        assert torch.equal(_tensor(other), _tensor(saved)), name


def _tensor(saved: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, saved["dtype"])
    raw = torch.frombuffer(bytearray.fromhex(saved["hex"]), dtype=torch.uint8)
    return raw.view(dtype).reshape(saved["shape"])


# -- what each case implies --------------------------------------------------------------------


def test_manual_batching(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("manual_batching")
    # no DataLoader and the model never switched to eval: one training pass from the model's
    # state holding every optimizer step
    (epoch,) = run.activities("Epoch")
    assert epoch["otel:ml.pass.source"] == "model" and epoch["otel:ml.pass.batches"] == 18
    assert run.activities("Evaluation") == []
    blocks = run.activities("StepBlock")
    assert blocks and {b["yprov:context"] for b in blocks} == {"training"}
    assert len(run.result["losses"]) == 18
    assert run.values("learning_rate") == run.result["learning_rates"]  # StepLR halves it
    expected = {
        "epochs": 3,
        "steps": 6,
        "batch_size": 16,
        "lr": 0.05,
        "seed": 7,
        "seed.random": 7,
        "seed.numpy": 7,
        "seed.torch": 7,
        "optimizer": "SGD",
        "optimizer.lr": 0.05,
        "optimizer.momentum": 0.9,
        "optimizer.nesterov": False,
        "lr_scheduler": "StepLR",
        "lr_scheduler.step_size": 1,
        "lr_scheduler.gamma": 0.5,
    }
    hparams = run.hparams()
    assert {k: hparams.get(k) for k in expected} == expected
    assert run.run["otel:ml.model.class"] == "Sequential"
    assert run.run["otel:ml.model.parameters"] == 8 * 16 + 16 + 16 + 1
    # three saves, each derived from the one before; the final load uses the last
    checkpoints = run.checkpoints()
    assert [e["prov:label"] for _, e in checkpoints] == ["ckpt_0.pt", "ckpt_1.pt", "ckpt_2.pt"]
    ids = [k for k, _ in checkpoints]
    assert run.derivations() == {(ids[1], ids[0]), (ids[2], ids[1])}
    for _, entity in checkpoints:
        path = Path(entity["dcterms:identifier"])
        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert entity["otel:ml.checkpoint.digest"] == digest
        assert entity["otel:file.size"] == path.stat().st_size
    loads = [a for a in run.activities("Checkpoint") if a["otel:ml.checkpoint.operation"] == "load"]
    (load,) = loads
    used = {
        u["prov:entity"]
        for u in run.prov["used"].values()
        if u["prov:activity"] in _keys(run, load)
    }
    assert ids[2] in used


def _keys(run: Run, activity: dict[str, Any]) -> set[str]:
    return {k for k, a in run.prov["activity"].items() if a is activity}


def test_no_optimizer(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("no_optimizer")
    assert len(run.result["losses"]) == 10  # one step per backward
    assert run.metric("learning_rate") is None
    assert not any(k.startswith("optimizer") for k in run.hparams())
    (epoch,) = run.activities("Epoch")  # the training before the DataLoader, from model state
    assert epoch["otel:ml.pass.source"] == "model" and epoch["otel:ml.pass.batches"] == 10
    (test,) = run.activities("Evaluation")  # after the training, never followed by more
    assert test["yprov:context"] == "test"
    assert test["otel:ml.pass.batches"] == run.result["test_batches"]
    assert test["otel:ml.eval.batches"] == run.result["test_batches"]  # its losses
    assert len(run.series("batch_size", "test")) == run.result["test_batches"]


def test_lbfgs_closure_steps(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("lbfgs")
    # 30 closure evaluations (backward passes), 6 optimizer steps: 6 steps
    assert run.result["closure_evaluations"] == 30
    assert len(run.values("loss")) == 6
    assert all(v > 0 for v in run.values("backward")) and all(
        v > 0 for v in run.values("optimizer")
    )
    hparams = run.hparams()
    assert hparams["optimizer"] == "LBFGS"
    assert hparams["optimizer.max_iter"] == 5 and hparams["optimizer.history_size"] == 4


def test_gradient_accumulation(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("accumulation")
    assert run.contexts("Epoch") == ["training", "training"]
    assert run.contexts("Evaluation") == ["validation", "validation"]
    # a step per batch; the optimizer ran in every fourth one only
    optimizer = run.values("optimizer")
    assert len(optimizer) == 24
    assert [i for i, v in enumerate(optimizer) if v > 0] == [3, 7, 11, 15, 19, 23]
    assert run.result["optimizer_steps"] == 6
    assert all(v > 0 for v in run.values("backward"))
    assert run.hparams()["accumulate"] == 4 and run.hparams()["optimizer"] == "AdamW"


def test_gradient_accumulation_without_a_loader(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("accumulation_no_loader")
    # a step per optimizer step (four backward passes each); its loss is the first one's
    assert len(run.values("loss")) == run.result["optimizer_steps"] == 6
    # training passes from the model's state between the DataLoader evaluations
    assert run.contexts("Epoch") == ["training", "training"]
    assert [a["otel:ml.pass.batches"] for a in run.activities("Epoch")] == [3, 3]
    # evaluation passes between (and after) training without a DataLoader are validation
    assert run.contexts("Evaluation") == ["validation", "validation"]


@pytest.mark.parametrize("case", ["gan", "gan_no_loader"])
def test_gan_two_optimizers(runs, case: str) -> None:  # type: ignore[no-untyped-def]
    run = runs(case)
    # one step per round of both optimizers, its loss the discriminator's (the first backward)
    assert len(run.values("loss")) == len(run.result["losses_g"]) == 8
    assert run.values("learning_rate") == [2e-3] * 8
    hparams = run.hparams()
    assert hparams["optimizer"] == "Adam" and hparams["optimizer_2"] == "Adam"
    assert hparams["optimizer.lr"] == 2e-3 and hparams["optimizer_2.lr"] == 1e-3
    assert run.contexts("Epoch") == (["training"] if case == "gan_no_loader" else ["training"] * 2)


def test_amp_grad_scaler_skipped_steps(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("amp")
    skipped = run.result["skipped"]
    assert 0 < sum(skipped) < len(skipped)
    assert [int(v) for v in run.values("skipped")] == skipped
    assert len(run.values("loss")) == 12  # the losses the script computed, not scaled ones
    assert run.contexts("Epoch") == ["training"]


def test_compiled_model_still_captures_graphs(runs) -> None:  # type: ignore[no-untyped-def]
    run, plain = runs("compiled"), runs("compiled", instrumented=False)
    assert run.result["graphs"] == plain.result["graphs"] and len(plain.result["graphs"]) >= 1
    assert run.contexts("Epoch") == ["training", "training"]
    assert run.run["otel:ml.model.class"] == "Net"  # the module inside OptimizedModule
    assert run.run["otel:ml.model.parameters"] == 6 * 24 + 24 + 24 + 1


def test_two_training_loops(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("two_loops")
    # two DataLoader epochs, then the second loop (no DataLoader) as a pass from model state
    assert run.contexts("Epoch") == ["training"] * 3
    assert [a["otel:ml.pass.source"] for a in run.activities("Epoch")] == [
        "dataloader",
        "dataloader",
        "model",
    ]
    assert run.contexts("Evaluation") == ["validation", "validation"]
    losses = run.values("loss")
    assert len(losses) == 16 and run.result["pretrained"] == 8
    # steps of the second loop (its own optimizer, no DataLoader) are separate steps too
    assert run.values("learning_rate") == run.result["learning_rates"]
    epochs = [r["epoch"] for r in run.series("loss")]
    assert epochs[:8] == ["0"] * 4 + ["1"] * 4
    hparams = run.hparams()
    assert hparams["optimizer"] == "Adam" and hparams["optimizer_2"] == "SGD"


def test_exception_in_the_loop(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("exception")
    assert "FloatingPointError: loss diverged" in run.process.stderr
    assert run.run["otel:status_code"] == "ERROR"
    assert run.run["otel:exception.type"] == "FloatingPointError"
    assert run.run["otel:exception.message"] == "loss diverged"
    # the epoch it broke in is ended too, with the steps up to the failing one
    assert run.contexts("Epoch") == ["training", "training"]
    assert [a["otel:ml.pass.batches"] for a in run.activities("Epoch")] == [6, 3]
    assert len(run.result["losses"]) == 9


# -- the README demo ----------------------------------------------------------------------------


def test_demo(runs) -> None:  # type: ignore[no-untyped-def]
    run = runs("demo")
    assert run.contexts("Epoch") == ["training", "training"]
    assert run.contexts("Evaluation") == ["validation", "validation", "test"]
    epochs = run.activities("Epoch")
    assert [a["otel:ml.dataloader.num_workers"] for a in epochs] == [2, 2]
    assert [a["otel:ml.dataloader.persistent_workers"] for a in epochs] == [True, True]
    steps = 4096 // 64
    losses = run.values("loss")
    assert len(losses) == 2 * steps and all(v == v for v in losses)
    assert run.values("learning_rate") == [1e-3] * steps + [5e-4] * steps  # StepLR
    assert run.values("batch_size") == [64.0] * 2 * steps
    # the script prints the last loss of each epoch: the series ends each epoch with it
    printed = re.findall(r"epoch (\d): train loss ([\d.]+)", run.process.stdout)
    assert [f"{losses[(int(e) + 1) * steps - 1]:.4f}" for e, _ in printed] == [
        v for _, v in printed
    ]
    assert len(run.series("batch_size", "validation")) == 2 * 4
    assert len(run.series("batch_size", "test")) == 4
    hparams = run.hparams()
    for key, value in {
        "epochs": 2,
        "batch_size": 64,
        "lr": 1e-3,
        "hidden": 64,
        "workers": 2,
        "seed": 42,
        "checkpoints": "ckpt",
        "seed.random": 42,
        "seed.torch": 42,
        "optimizer": "Adam",
        "optimizer.lr": 1e-3,
        "lr_scheduler": "StepLR",
        "lr_scheduler.gamma": 0.5,
    }.items():
        assert hparams[key] == value, key
    checkpoints = run.checkpoints()
    assert [e["prov:label"] for _, e in checkpoints] == ["epoch_0.pt", "epoch_1.pt"]
    assert run.derivations() == {(checkpoints[1][0], checkpoints[0][0])}
    datasets = [e for e in run.prov["entity"].values() if e["prov:type"] == "provml:Dataset"]
    assert len(datasets) == 3  # train, validation, test


def test_demo_is_bit_identical_without_instrumentation(runs) -> None:  # type: ignore[no-untyped-def]
    instrumented, plain = runs("demo"), runs("demo", instrumented=False)
    assert instrumented.process.stdout == plain.process.stdout
    for name in ("epoch_0.pt", "epoch_1.pt"):
        mine = torch.load(instrumented.cwd / "ckpt" / name)["model"]
        theirs = torch.load(plain.cwd / "ckpt" / name)["model"]
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), name
