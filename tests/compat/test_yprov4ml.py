"""yProv4ML scripts switched by one import: run with and without opentelemetry-instrument.

The script (scripts/yprov_train.py) is written the way yProv4ML's documentation teaches:
start_run, log_param, log_dataset, log_metric per step with contexts, log_system_metrics,
save_model_version per epoch, log_model, end_run. Each run must leave a valid document (also
by yProv Explorer's rules) holding what yProv4ML records — parameters, every metric value per
context, models, datasets, the source and the command — and what it does not: step timings,
epochs, the hardware agent, checkpoint lineage with digests. And nothing in the working
directory but the output folder.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.support import INSTRUMENT, clean_env, run_documents
from tests.yprovstore import FakeYProvStore

SCRIPTS = Path(__file__).parent / "scripts"
TRAIN = SCRIPTS / "yprov_train.py"
EPOCHS, TRAIN_STEPS, VAL_BATCHES = 2, 6, 2  # 192 / 32 and 64 / 32 samples per batch


def _run(
    script: Path, cwd: Path, *args: str, instrumented: bool, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(script), *args]
    if instrumented:
        command.insert(0, str(INSTRUMENT))
    env = clean_env(
        OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL="0", OTEL_PYTHON_PROVTEL_SUMMARY="false", **env_vars
    )
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _type(record: dict[str, Any]) -> str:
    t = record.get("prov:type")
    return str(t["$"] if isinstance(t, dict) else t)


class Document:
    """A PROV-JSON document with the look-ups the assertions need."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc = assert_valid(path, yprov=True)
        self.entities: dict[str, dict[str, Any]] = self.doc.get("entity", {})
        self.activities: dict[str, dict[str, Any]] = self.doc.get("activity", {})

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {i: e for i, e in self.entities.items() if _type(e) == kind}

    def relations(self, kind: str) -> list[dict[str, Any]]:
        return list(self.doc.get(kind, {}).values())

    def metric(self, label: str, context: str) -> tuple[dict[str, Any], pd.DataFrame]:
        (entity,) = [
            e
            for e in self.of_type("provml:Metric").values()
            if e["prov:label"] == label and e.get("yprov:context") == context
        ]
        return entity, pd.read_csv(self.path.parent / entity["dcterms:identifier"])

    def hyperparameters(self) -> dict[str, Any]:
        return {
            e["prov:label"]: e["prov:value"] for e in self.of_type("provml:HyperParameter").values()
        }


def _check_documented_run(cwd: Path, record: Path) -> Document:
    # nothing in the working directory but the output folder
    assert sorted(p.name for p in cwd.iterdir()) == ["prov"]
    (path,) = run_documents(cwd / "prov")
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics", "prov.json", "upload.json"]
    doc = Document(path)
    logged = json.loads(record.read_text())

    # the run, named after the experiment
    (run,) = [a for a in doc.activities.values() if _type(a) == "provtel:Run"]
    assert run["otel:ml.run.name"] == "mnist_like"

    # parameters (yProv4ML's log_param), with the command and the optimizer found by provtel
    params = doc.hyperparameters()
    assert params["lr"] == 0.01 and params["optimizer"] == "Adam"
    assert params["loss_fn"] == "cross_entropy"
    assert params["execution_command"] == "python yprov_train.py yprov_train.py"
    assert params["optimizer.lr"] == 0.01  # more: read from the optimizer itself

    # every metric value per context, exactly as logged, with the step the script gave
    for (label, context), expected_count in {
        ("Loss", "training"): EPOCHS * TRAIN_STEPS,
        ("Loss", "validation"): EPOCHS * VAL_BATCHES,
        ("accuracy", "validation"): EPOCHS * VAL_BATCHES,
    }.items():
        entity, series = doc.metric(label, context)
        expected = [(s, v) for n, c, s, v in logged if (n, c) == (label, context)]
        assert len(expected) == expected_count
        assert entity["provtel:count"] == expected_count
        # (rows of a pass's first step can follow its blocks' rows: compare in time order)
        series = series.sort_values("time_unix_nano", kind="stable")
        assert list(zip(series["step"], series["value"], strict=True)) == expected
        values = [v for _s, v in expected]
        assert (entity["provtel:min"], entity["provtel:max"]) == (min(values), max(values))
    # system metrics, once per epoch, never a "None" reading
    for label in ("cpu_usage_pct", "ram_usage_pct", "ram_usage_gb", "disk_usage_gb"):
        entity, series = doc.metric(label, "training")
        assert list(series["step"]) == list(range(EPOCHS)) and series["value"].notna().all()

    # models: one version per epoch and the final one, in the artifacts folder, with digests
    models = {e["prov:label"]: e for e in doc.of_type("provml:Model").values()}
    (artifacts,) = (cwd / "prov" / "artifacts").iterdir()
    for name, file in (
        ("mlp_0.pt", "mlp/mlp_0.pt"),
        ("mlp_1.pt", "mlp/mlp_1.pt"),
        ("mlp_final.pt", "mlp_final/mlp_final.pt"),
    ):
        assert models[name]["dcterms:identifier"] == str(artifacts / file)
        assert models[name]["otel:ml.checkpoint.digest"] == _sha256(artifacts / file)
    # lineage: each version derived from the previous one, generated inside the run
    ids = {e["prov:label"]: i for i, e in doc.of_type("provml:Model").items()}
    derived = {
        (r["prov:generatedEntity"], r["prov:usedEntity"]) for r in doc.relations("wasDerivedFrom")
    }
    assert (ids["mlp_1.pt"], ids["mlp_0.pt"]) in derived
    assert (ids["mlp_final.pt"], ids["mlp_1.pt"]) in derived
    assert models["Sequential"]["otel:ml.model.parameters"] == 8 * 16 + 16 + 16 * 2 + 2

    # datasets under the user's labels, with their real sizes, used by the run
    datasets = {e["prov:label"]: (i, e) for i, e in doc.of_type("provml:Dataset").items()}
    assert datasets["train_dataset"][1]["otel:ml.dataset.size"] == 192
    assert datasets["train_dataset"][1]["otel:ml.dataloader.shuffle"] is True
    assert datasets["val_dataset"][1]["otel:ml.dataset.size"] == 64
    used = {r["prov:entity"] for r in doc.relations("used")}
    assert {datasets["train_dataset"][0], datasets["val_dataset"][0]} <= used

    # the source: the script, with its digest, used by the run
    ((source_id, source),) = [
        (i, e)
        for i, e in doc.of_type("provml:Artifact").items()
        if e["prov:label"] == "yprov_train.py"
    ]
    assert source["otel:ml.checkpoint.digest"] == _sha256(TRAIN)
    assert source_id in used

    # more than yProv4ML: epochs and evaluation passes, per-step timings, the machine
    kinds = [_type(a) for a in doc.activities.values()]
    assert kinds.count("provtel:Epoch") == EPOCHS, kinds
    assert kinds.count("provtel:Evaluation") == EPOCHS, kinds
    _, durations = doc.metric("duration", "training")
    assert len(durations) == EPOCHS * TRAIN_STEPS and (durations["value"] > 0).all()
    agents = doc.doc["agent"].values()
    assert any(a.get("otel:host.name") for a in agents)
    assert any("yprov_train.py" in str(a.get("otel:process.command_args")) for a in agents)
    return doc


@pytest.mark.parametrize("instrumented", [False, True], ids=["python", "opentelemetry-instrument"])
def test_the_documented_script_switched_by_one_import(tmp_path: Path, instrumented: bool) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    record = tmp_path / "logged.json"
    with FakeYProvStore() as store:  # and it lands in yProvStore at the end of the run
        token = store.token_for("alice@example.org")
        result = _run(
            TRAIN,
            cwd,
            "--record",
            str(record),
            instrumented=instrumented,
            OTEL_PYTHON_PROVTEL_UPLOAD_URL=store.url,
            OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN=token,
        )
        assert result.returncode == 0, result.stderr
        doc = _check_documented_run(cwd, record)
        (stored,) = store.documents.values()
    assert stored.data == doc.path.read_bytes()
    assert "error" not in stored.parsed, stored.parsed  # prov 2.0.0, as the service parses
    uploads = json.loads((doc.path.parent / "upload.json").read_text())["uploads"]
    assert uploads[store.url]["pid"] == stored.pid


def test_a_crash_before_end_run_still_leaves_the_document(tmp_path: Path) -> None:
    # yProv4ML writes no PROV at all when end_run is not reached
    record = tmp_path / "logged.json"
    result = _run(TRAIN, tmp_path, "--fail", "--record", str(record), instrumented=False)
    assert result.returncode == 1 and "RuntimeError: diverged" in result.stderr
    (path,) = run_documents(tmp_path / "prov")
    doc = Document(path)
    (run,) = [a for a in doc.activities.values() if _type(a) == "provtel:Run"]
    assert run["otel:status_code"] == "ERROR"
    assert "diverged" in run["otel:status_description"]
    logged = json.loads(record.read_text())
    _entity, series = doc.metric("Loss", "training")
    series = series.sort_values("time_unix_nano", kind="stable")
    assert list(series["value"]) == [v for n, c, _s, v in logged if c == "training"]
    assert len(series) == 2 * TRAIN_STEPS  # both epochs' steps, though end_run never ran
    assert {e["prov:label"] for e in doc.of_type("provml:Model").values()} >= {
        "mlp_0.pt",
        "mlp_1.pt",
    }


def test_several_runs_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    # yProv4ML carried run A's metrics into run B; here each start_run ... end_run is a run
    result = _run(SCRIPTS / "yprov_two_runs.py", tmp_path, instrumented=False)
    assert result.returncode == 0, result.stderr
    (path,) = run_documents(tmp_path / "prov")
    doc = Document(path)
    runs = {
        a["otel:ml.run.name"]: i for i, a in doc.activities.items() if _type(a) == "provtel:Run"
    }
    assert set(runs) == {"sweep_a", "sweep_b"}
    generated = {r["prov:entity"]: r["prov:activity"] for r in doc.relations("wasGeneratedBy")}
    shared = {
        generated[i]: e
        for i, e in doc.of_type("provml:Metric").items()
        if e["prov:label"] == "shared"
    }
    assert set(shared) == {runs["sweep_a"], runs["sweep_b"]}
    assert all(e["provtel:count"] == 3 for e in shared.values())
    lr_of = {
        r["prov:activity"]: doc.entities[r["prov:entity"]]["prov:value"]
        for r in doc.relations("used")
        if doc.entities.get(r["prov:entity"], {}).get("prov:label") == "lr"
    }
    assert lr_of == {runs["sweep_a"]: 0.1, runs["sweep_b"]: 0.01}


def test_contexts_and_argument_orders() -> None:
    import provtel.compat.yprov4ml as yprov4ml
    from provtel.compat.yprov4ml import _context, _name_first

    assert _context(yprov4ml.Context.TRAINING) == "training"
    assert _context(yprov4ml.Context.TESTING) == "test"  # provtel's test passes' context
    assert _context("training") == "training" and _context(None) is None

    import enum

    class MyNewContext(enum.Enum):  # as yProv4ML's docs teach
        PREPROCESSING = 3

    assert _context(MyNewContext.PREPROCESSING) == "preprocessing"
    model = object()
    assert _name_first("m", model) == ("m", model) == _name_first(model, "m")


def test_without_any_sdk_the_calls_are_harmless(tmp_path: Path) -> None:
    # OTEL_SDK_DISABLED: provtel sets nothing up, the script runs, nothing is written
    script = tmp_path / "noop.py"
    script.write_text(
        "import provtel.compat.yprov4ml as yprov4ml\n"
        "yprov4ml.start_run('x')\n"
        "yprov4ml.log_metric('loss', 1.0, yprov4ml.Context.TRAINING, step=0)\n"
        "yprov4ml.log_param('lr', 0.1)\n"
        "yprov4ml.end_run()\n"
        "print('done')\n"
    )
    env = clean_env(OTEL_SDK_DISABLED="true")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noop.py"]


def test_importing_the_layer_loads_neither_the_sdk_nor_the_exporter_nor_torch() -> None:
    # the instrumentation distribution speaks the OpenTelemetry API: only start_run, and only
    # when nothing is configured, reaches the SDK and the exporter
    code = (
        "import sys, provtel.compat.yprov4ml\n"
        "print(sorted({m.split('.')[0] + '.' + m.split('.')[1] if '.' in m else m "
        "for m in sys.modules if m.startswith(('opentelemetry.sdk', 'provtel.exporter', "
        "'torch'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
