"""Lightning and Hugging Face ``Trainer`` scripts run under ``opentelemetry-instrument``, unchanged.

Each script (``scripts/lightning_fit.py``, ``scripts/hf_trainer.py``) trains a tiny model the way
people use the framework, with nothing downloaded, and writes what the framework reported (its
logged values, evaluation results, checkpoints) to ``$RESULT``. The run must leave one valid PROV
document in which every training epoch and evaluation pass is present with the right context
(the sanity check left out), every evaluation value equals what the framework logged, float for
float, the configuration is recorded and the saved weights are ``provml:Model`` entities chained
by derivation, with their digests.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
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

SCRIPTS = Path(__file__).parent / "scripts"
#: nothing may be downloaded: the hubs are off for the scripts
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass
class Run:
    """One instrumented run of a script: its folder, process, result and document."""

    cwd: Path
    process: subprocess.CompletedProcess[str]
    result: dict[str, Any]
    document: Path
    prov: dict[str, Any]

    def activities(self, kind: str) -> list[dict[str, Any]]:
        """Activities of ``prov:type`` ``provtel:<kind>``, in start order."""
        return activities_of(self.prov, kind)

    def contexts(self, kind: str) -> list[str]:
        return [a.get("yprov:context") for a in self.activities(kind)]

    def entities(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: e for k, e in self.prov["entity"].items() if e.get("prov:type") == kind}

    def hparams(self) -> dict[str, Any]:
        return {
            e["prov:label"]: e["prov:value"]
            for e in self.entities("provml:HyperParameter").values()
        }

    def metric(self, label: str, context: str) -> dict[str, Any] | None:
        found = [
            e
            for e in self.entities("provml:Metric").values()
            if e["prov:label"] == label and e.get("yprov:context") == context
        ]
        assert len(found) <= 1, found
        return found[0] if found else None

    def rows(self, label: str, context: str) -> list[dict[str, str]]:
        """The rows of a metric's series file (step, epoch, value, timestep, time_unix_nano)."""
        metric = self.metric(label, context)
        assert metric is not None, f"no {label!r} in context {context!r}"
        with open(self.document.parent / metric["dcterms:identifier"], encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert metric["provtel:count"] == len(rows)
        return rows

    def values(self, label: str, context: str) -> list[float]:
        """The series of a metric, in order (repr-written floats parse back exactly)."""
        return [float(r["value"]) for r in self.rows(label, context)]

    def steps(self, label: str, context: str) -> list[int]:
        return [int(r["step"]) for r in self.rows(label, context)]

    def models(self) -> dict[str, dict[str, Any]]:
        """``provml:Model`` entities saved to or loaded from a file, by their path."""
        return {
            e["dcterms:identifier"]: {"id": k, **e}
            for k, e in self.entities("provml:Model").items()
            if "dcterms:identifier" in e and "otel:ml.checkpoint.digest" in e
        }

    def derivations(self) -> set[tuple[str, str]]:
        return {
            (d["prov:generatedEntity"], d["prov:usedEntity"])
            for d in self.prov.get("wasDerivedFrom", {}).values()
        }

    def used(self) -> set[str]:
        return {u["prov:entity"] for u in self.prov.get("used", {}).values()}


def _run(script: str, base: Path) -> Run:
    cwd = base / Path(script).stem
    cwd.mkdir()
    output = cwd / "prov"
    env = clean_env(
        RESULT=str(cwd / "result.json"), OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(output), **OFFLINE
    )
    process = run_instrumented(SCRIPTS / script, cwd=cwd, env=env, timeout=300)
    assert process.returncode == 0, process.stderr[-4000:]
    # no hook failed and no integration turned itself off
    complaints = [
        line
        for line in process.stderr.splitlines()
        if "provtel:" in line and ("failed" in line or "is off" in line)
    ]
    assert not complaints, complaints
    (document,) = run_documents(output)
    return Run(
        cwd,
        process,
        json.loads((cwd / "result.json").read_text()),
        document,
        assert_valid(document),
    )


def _plain(script: str, base: Path, runner: PlainRunner) -> dict[str, Any]:
    """What the script computed when run without instrumentation."""
    cwd = base / f"{Path(script).stem}-plain"
    cwd.mkdir()
    env = clean_env(RESULT=str(cwd / "result.json"), **OFFLINE)
    process = runner.run(SCRIPTS / script, cwd=cwd, env=env, timeout=300)
    assert process.returncode == 0, process.stderr[-4000:]
    return {"cwd": cwd, **json.loads((cwd / "result.json").read_text())}


def _digest(path: str) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _chain(run: Run, paths: list[str]) -> None:
    """Each file is a provml:Model with its size and digest, derived from the one before."""
    models = run.models()
    for path in paths:
        assert path in models, (path, sorted(models))
        assert models[path]["otel:ml.checkpoint.digest"] == _digest(path)
        assert models[path]["otel:file.size"] == Path(path).stat().st_size
    derivations = run.derivations()
    for before, after in itertools.pairwise(paths):
        assert (models[after]["id"], models[before]["id"]) in derivations, (before, after)


# -- Lightning ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run("lightning_fit.py", tmp_path_factory.mktemp("lightning"))


def test_lightning_passes_without_the_sanity_check(lightning_run: Run) -> None:
    run = lightning_run
    assert run.result["sanity_batches"] == 2  # Lightning did run its sanity check
    assert run.contexts("Epoch") == ["training"] * 3
    assert run.contexts("Evaluation") == ["validation"] * 3 + ["test"]
    # the sanity check's two batches are in no pass: three validation passes of three batches
    assert [a["otel:ml.pass.batches"] for a in run.activities("Evaluation")] == [3, 3, 3, 2]


def test_lightning_logged_values_equal_what_lightning_logged(lightning_run: Run) -> None:
    run, seen = lightning_run, lightning_run.result
    assert run.values("train_loss", "training") == seen["train_loss"]  # per step, 4 per epoch
    assert run.steps("train_loss", "training") == list(range(12))  # Lightning's global step
    assert len(seen["train_loss"]) == 12
    # logged per epoch in training_step: one value per epoch, as Lightning reduced it
    assert run.values("train_mae", "training") == seen["train_mae"] and len(seen["train_mae"]) == 3
    assert [r["epoch"] for r in run.rows("train_mae", "training")] == ["0", "1", "2"]
    for name in ("val_loss", "val_mae"):  # per epoch, as Lightning reduced them
        assert run.values(name, "validation") == [v[name] for v in seen["validation"]], name
    assert run.values("test_loss", "test") == [seen["test"]["test_loss"]]
    assert run.metric("val_loss", "test") is None and run.metric("test_loss", "validation") is None


def test_lightning_configuration(lightning_run: Run) -> None:
    hparams = lightning_run.hparams()
    expected = {
        "hidden": 16,  # save_hyperparameters()
        "lr": 0.01,
        "gamma": 0.5,
        "seed": 1234,  # seed_everything
        "seed.torch": 1234,
        "optimizer": "Adam",  # configure_optimizers
        "optimizer.lr": 0.01,
        "optimizer.weight_decay": 1e-4,
        "lr_scheduler": "StepLR",
        "lr_scheduler.gamma": 0.5,
    }
    assert {k: hparams.get(k) for k in expected} == expected
    assert lightning_run.result["hparams"] == {"hidden": 16, "lr": 0.01, "gamma": 0.5}


def test_lightning_checkpoints_are_chained(lightning_run: Run) -> None:
    run = lightning_run
    checkpoints = run.result["checkpoints"]
    assert [Path(p).name for p in checkpoints] == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    _chain(run, checkpoints)
    # load_from_checkpoint(best) read the saved file: the test used that model
    assert run.models()[run.result["best"]]["id"] in run.used()


def test_lightning_training_is_unchanged(
    lightning_run: Run, tmp_path_factory: pytest.TempPathFactory, plain_runner: PlainRunner
) -> None:
    plain = _plain("lightning_fit.py", tmp_path_factory.mktemp("lightning-plain"), plain_runner)
    run = lightning_run.result
    for key in ("train_loss", "train_mae", "validation", "test", "hparams"):
        assert run[key] == plain[key], key
    for mine, theirs in zip(run["checkpoints"], plain["checkpoints"], strict=True):
        a, b = torch.load(mine)["state_dict"], torch.load(theirs)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), mine


# -- Hugging Face Trainer -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run("hf_trainer.py", tmp_path_factory.mktemp("hf"))


def test_hf_every_epoch_and_evaluation_is_validation(hf_run: Run) -> None:
    run = hf_run
    assert run.contexts("Epoch") == ["training"] * 2
    # one evaluation per epoch, then trainer.evaluate(): all on eval_dataset, all validation
    assert run.contexts("Evaluation") == ["validation"] * 3
    assert [a["otel:ml.pass.batches"] for a in run.activities("Evaluation")] == [2, 2, 2]


def test_hf_evaluation_results_equal_what_the_trainer_logged(hf_run: Run) -> None:
    run, history = hf_run, hf_run.result["log_history"]
    evaluations = [h for h in history if "eval_loss" in h]
    assert (
        len(evaluations) == 3 and evaluations[-1]["eval_loss"] == run.result["final"]["eval_loss"]
    )
    for name in ("eval_loss", "eval_accuracy"):  # compute_metrics' accuracy included
        assert run.values(name, "validation") == [h[name] for h in evaluations], name
        assert run.steps(name, "validation") == [h["step"] for h in evaluations] == [6, 12, 12]
    assert run.metric("eval_loss", "test") is None


def test_hf_training_logs(hf_run: Run) -> None:
    run, history = hf_run, hf_run.result["log_history"]
    logs = [h for h in history if "grad_norm" in h]
    assert len(logs) == 6  # every logging_steps=2 of 12 steps
    # under HF's logger names (train/<key>), apart from the per-step loss and lr series
    for key in ("loss", "grad_norm", "learning_rate"):
        assert run.values(f"train/{key}", "training") == [h[key] for h in logs], key
        assert run.steps(f"train/{key}", "training") == [h["step"] for h in logs], key
    (summary,) = [h for h in history if "train_loss" in h]
    assert run.values("train/train_loss", "training") == [summary["train_loss"]]
    assert run.values("train/epoch", "training") == [h["epoch"] for h in [*logs, summary]]
    assert len(run.values("loss", "training")) == 12  # every step's loss, from the torch hooks


def test_hf_configuration(hf_run: Run) -> None:
    hparams = hf_run.hparams()
    assert {k: hparams.get(k) for k in hf_run.result["args"]} == hf_run.result["args"]
    assert hparams["eval_strategy"] == "epoch" and hparams["seed"] == 3
    assert hparams["hub_token"] == "[redacted]"
    assert "hf_not_a_real_token" not in hf_run.document.read_text()
    assert hparams["model.config.hidden_size"] == 16
    assert hparams["model.config.num_hidden_layers"] == 1
    # recorded on spans of their own under the run (the run span's attribute limit), they are
    # the run's plan all the same
    (plan,) = [e for e in hf_run.prov["entity"].values() if "prov:Plan" in str(e["prov:type"])]
    for key, value in hf_run.result["args"].items():
        assert plan[f"provml:{key}"] == value, key
    assert plan["provml:model.config.hidden_size"] == 16


def test_hf_weights_are_chained(hf_run: Run) -> None:
    run = hf_run
    weights = [f"{d}/model.safetensors" for d in run.result["checkpoints"]]
    assert [Path(w).parent.name for w in weights] == ["checkpoint-6", "checkpoint-12"]
    final = f"{run.result['final_dir']}/model.safetensors"
    _chain(run, [*weights, final])
    assert run.result["reloaded_parameters"] > 0
    # from_pretrained("final") read those weights
    assert run.models()[final]["id"] in run.used()


def test_hf_training_is_unchanged(
    hf_run: Run, tmp_path_factory: pytest.TempPathFactory, plain_runner: PlainRunner
) -> None:
    plain = _plain("hf_trainer.py", tmp_path_factory.mktemp("hf-plain"), plain_runner)
    timing = ("runtime", "per_second")

    def values(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in h.items() if not k.endswith(timing)} for h in history]

    assert values(hf_run.result["log_history"]) == values(plain["log_history"])
    weights = "final/model.safetensors"
    assert (Path(hf_run.result["final_dir"]).parent / weights).read_bytes() == (
        plain["cwd"] / weights
    ).read_bytes()
