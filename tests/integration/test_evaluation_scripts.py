"""Scripts people actually run, under ``opentelemetry-instrument``: hand-batched training with
evaluations from the model's own state, evaluation results without code, configuration saved in
checkpoints, and a script that re-seeds ``random`` every epoch.

Each run leaves one valid PROV document; every pass is present; every evaluation value equals,
float for float, what the script computed; validation and test are told apart by the data
evaluated and what followed; checkpoints carry their configuration and form a chain.
"""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.integration.plain_runs import PlainRunner
from tests.integration.test_torch_scripts import DEMO, SCRIPTS, Run
from tests.support import assert_nested, clean_env, run_documents, run_instrumented

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, script: Path, *args: str, plain: PlainRunner | None = None) -> Run:
    """The instrumented run of a script, or its plain run (``python script``) by ``plain``."""
    instrumented = plain is None
    cwd = tmp_path / ("instrumented" if instrumented else "plain")
    cwd.mkdir()
    output = cwd / "prov"
    env = clean_env(RESULT=str(cwd / "result.json"), OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(output))
    if plain is None:
        process = run_instrumented(script, *args, cwd=cwd, env=env)
    else:
        process = plain.run(script, *args, cwd=cwd, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    import json

    result_file = cwd / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    run = Run(cwd, process, result)
    if instrumented:
        (run.document,) = run_documents(output)
        run.doc = assert_valid(run.document)
    return run


def _rows(run: Run, label: str, context: str) -> list[dict[str, str]]:
    metric = run.metric(label, context)
    assert metric is not None, f"no {label!r} series in {context!r}"
    assert run.document is not None
    with open(run.document.parent / metric["dcterms:identifier"], encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _batch_losses(run: Run, evaluation: dict[str, Any]) -> list[float]:
    """The per-batch losses of one evaluation pass: its step blocks' ``loss`` rows."""
    span = evaluation["otel:span_id"]
    blocks = [a for a in run.activities("StepBlock") if a.get("otel:parent_span_id") == span]
    steps = {
        int(b["otel:ml.step.first"]) + i for b in blocks for i in range(b["otel:ml.step.count"])
    }
    rows = _rows(run, "loss", evaluation["yprov:context"])
    return [float(r["value"]) for r in rows if int(r["step"]) in steps]


def _file_folder(run: Run) -> Path:
    assert run.document is not None
    return run.document.parent


# -- nanoGPT-style ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nanogpt(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("nanogpt"), SCRIPTS / "nanogpt_style.py")


def test_nanogpt_style_passes_from_model_state(nanogpt: Run) -> None:
    run = nanogpt
    # evaluations at iterations 0, 10, 20, 30, each over train.bin then val.bin; training
    # between them: four training passes (the last is iteration 30, then the loop breaks)
    assert run.contexts("Epoch") == ["training"] * 4
    evaluations = run.activities("Evaluation")
    assert [e["otel:ml.dataset.name"] for e in evaluations] == ["train.bin", "val.bin"] * 4
    # every evaluation was followed by training: validation (the first one too, before any
    # training step: it is not a test)
    assert run.contexts("Evaluation") == ["validation"] * 8
    assert [e["otel:ml.pass.source"] for e in evaluations] == ["model"] * 8
    assert [a["otel:ml.pass.batches"] for a in run.activities("Epoch")] == [10, 10, 10, 1]
    assert run.values("loss") == run.result["losses"]  # training steps: 31 iterations
    assert run.values("learning_rate") == run.result["learning_rates"]  # set by hand


def test_nanogpt_style_evaluation_values_are_the_scripts(nanogpt: Run) -> None:
    run = nanogpt
    expected = run.result["evaluations"]
    evaluations = run.activities("Evaluation")
    assert len(evaluations) == len(expected) == 8
    for activity, computed in zip(evaluations, expected, strict=True):
        assert activity["otel:ml.eval.loss"] == computed["mean"]  # float for float
        assert activity["otel:ml.eval.batches"] == 3
        assert activity["otel:ml.eval.samples"] == 3 * 4 * 8
        assert _batch_losses(run, activity) == computed["batch_losses"]
    # one row per evaluation pass in the eval_loss series, at the iteration it ran
    rows = _rows(run, "eval_loss", "validation")
    assert [float(r["value"]) for r in rows] == [e["mean"] for e in expected]
    assert [int(r["step"]) for r in rows] == [e["iter"] for e in expected]
    assert run.metric("backward", "validation") is None  # no phase that did not happen


def test_nanogpt_style_checkpoint_dict_configuration(nanogpt: Run) -> None:
    run = nanogpt
    checkpoints = run.checkpoints()
    saved = run.result["saved"]
    assert len(checkpoints) == len(saved) == 3  # iterations 10, 20, 30
    ids = [k for k, _ in checkpoints]
    assert run.derivations() == {(ids[1], ids[0]), (ids[2], ids[1])}
    config = run.result["config"]
    for (_, entity), save in zip(checkpoints, saved, strict=True):
        assert entity["otel:ml.checkpoint.entry.iter_num"] == save["iter_num"]
        assert entity["otel:ml.checkpoint.entry.best_val_loss"] == save["best_val_loss"]
        assert entity["otel:ml.checkpoint.entry.config.batch_size"] == config["batch_size"]
        assert entity["otel:ml.checkpoint.entry.config.learning_rate"] == config["learning_rate"]
        assert entity["otel:ml.checkpoint.entry.model_args.n_embd"] == 16
        secret = entity["otel:ml.checkpoint.entry.config.wandb_api_key"]
        assert "sk-not-a-real-key" not in str(secret)
        assert not any(k.startswith("otel:ml.checkpoint.entry.model.") for k in entity)
    assert "sk-not-a-real-key" not in run.document.read_text()  # type: ignore[union-attr]


# -- word_language_model-style ---------------------------------------------------------------


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("wlm"), SCRIPTS / "word_language_model.py")


def test_word_language_model_epochs_validation_and_test(word_lm: Run) -> None:
    run = word_lm
    assert run.contexts("Epoch") == ["training"] * 3
    assert [a["otel:ml.pass.batches"] for a in run.activities("Epoch")] == [25, 25, 25]
    # val_data after each epoch is validation; test_data, evaluated once after training and
    # never before, is the test
    assert run.contexts("Evaluation") == ["validation"] * 3 + ["test"]
    names = [e["otel:ml.dataset.name"] for e in run.activities("Evaluation")]
    assert names == ["val_data"] * 3 + ["test_data"]
    assert run.values("loss") == run.result["losses"]


def test_word_language_model_evaluation_values_are_the_scripts(word_lm: Run) -> None:
    run = word_lm
    expected = run.result["evaluations"]
    for activity, computed in zip(run.activities("Evaluation"), expected, strict=True):
        assert activity["otel:ml.eval.loss"] == computed["mean"]
        assert activity["otel:ml.eval.loss"] == pytest.approx(computed["script"], rel=1e-12)
        assert activity["otel:ml.eval.batches"] == len(computed["batch_losses"])
        assert _batch_losses(run, activity) == computed["batch_losses"]
    assert [float(r["value"]) for r in _rows(run, "eval_loss", "validation")] == [
        e["mean"] for e in expected[:3]
    ]
    assert [float(r["value"]) for r in _rows(run, "eval_loss", "test")] == [expected[3]["mean"]]
    hparams = run.hparams()
    assert hparams["bptt"] == 7 and hparams["lr"] == 20.0  # argparse
    # the whole model saved with torch.save and loaded back for the test
    (saved,) = {e["prov:label"] for _, e in run.checkpoints()}
    assert saved == "model.pt"


def test_word_language_model_timeline(word_lm: Run) -> None:
    """The best model is saved after each validation, still in eval mode (``model.train()``
    comes with the next epoch): each validation ends at its last batch, where the next epoch
    begins, and the saves are the run's, after the validation, not inside it."""
    run = word_lm
    assert_nested(run.doc)
    passes = sorted(
        run.activities("Epoch") + run.activities("Evaluation"),
        key=lambda a: a["otel:start_time_unix_nano"],
    )
    assert [a["prov:type"] for a in passes] == ["provtel:Epoch", "provtel:Evaluation"] * 3 + [
        "provtel:Evaluation"
    ]
    for before, after in itertools.pairwise(passes):
        assert before["otel:end_time_unix_nano"] <= after["otel:start_time_unix_nano"]
    (run_activity,) = run.activities("Run")
    files = run.activities("Checkpoint")
    assert files and all(f["otel:parent_span_id"] == run_activity["otel:span_id"] for f in files)
    validations = run.activities("Evaluation")[:3]
    first_save = min(f["otel:start_time_unix_nano"] for f in files)
    assert validations[0]["otel:end_time_unix_nano"] <= first_save


def test_word_language_model_is_bit_identical_without_instrumentation(
    word_lm: Run, tmp_path: Path, plain_runner: PlainRunner
) -> None:
    plain = _run(tmp_path, SCRIPTS / "word_language_model.py", plain=plain_runner)
    assert plain.result["losses"] == word_lm.result["losses"]
    assert plain.result["evaluations"] == word_lm.result["evaluations"]
    assert plain.result["params"] == word_lm.result["params"]


# -- re-seeding random every epoch -------------------------------------------------------------


def test_reseeding_random_every_epoch_loses_nothing(tmp_path: Path) -> None:
    run = _run(tmp_path, SCRIPTS / "reseed_random.py")
    epochs = run.result["epochs"]
    assert run.contexts("Epoch") == ["training"] * epochs
    assert run.contexts("Evaluation") == ["validation"] * epochs
    assert len(run.activities("StepBlock")) >= 2 * epochs
    assert [e["prov:label"] for _, e in run.checkpoints()] == [
        f"epoch_{i}.pt" for i in range(epochs)
    ]
    ids = [a["otel:span_id"] for a in run.prov["activity"].values() if "otel:span_id" in a]
    assert len(ids) == len(set(ids))
    assert run.values("loss") == run.result["losses"]
    assert [e["otel:ml.eval.loss"] for e in run.activities("Evaluation")] == run.result[
        "validation"
    ]


# -- the README demo ---------------------------------------------------------------------------


def test_demo_validation_and_test_loss_in_its_document(tmp_path: Path) -> None:
    run = _run(tmp_path, DEMO, "--epochs", "2", "--workers", "0", "--checkpoints", "ckpt")
    printed = re.findall(r"val loss ([\d.]+)", run.process.stdout)
    (test_printed,) = re.findall(r"test loss ([\d.]+)", run.process.stdout)
    validation = [a for a in run.activities("Evaluation") if a["yprov:context"] == "validation"]
    (test,) = [a for a in run.activities("Evaluation") if a["yprov:context"] == "test"]
    # the demo averages its 4 batches of 256: the batch-weighted mean is the same number
    assert [f"{a['otel:ml.eval.loss']:.4f}" for a in validation] == printed
    assert f"{test['otel:ml.eval.loss']:.4f}" == test_printed
    assert [a["otel:ml.eval.batches"] for a in validation] == [4, 4]
    rows = _rows(run, "eval_loss", "validation")
    assert [f"{float(r['value']):.4f}" for r in rows] == printed
    assert len(_rows(run, "loss", "validation")) == 8  # per batch
