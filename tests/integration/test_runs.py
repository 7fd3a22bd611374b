"""Several runs in one process, named with provtel.run(name=...)."""

from __future__ import annotations

from pathlib import Path

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, run_documents, run_instrumented

SCRIPT = Path(__file__).parent / "scripts" / "two_runs.py"


def test_named_runs_have_clear_boundaries(tmp_path: Path) -> None:
    result = run_instrumented(SCRIPT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "done\n"
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)
    activities = doc["activity"]
    runs = {
        a["otel:ml.run.name"]: key
        for key, a in activities.items()
        if a.get("prov:type") == "provtel:Run"
    }
    assert set(runs) == {"pretrain", "finetune"}
    assert activities[runs["pretrain"]]["otel:status_code"] == "UNSET"
    finetune = activities[runs["finetune"]]
    assert finetune["otel:status_code"] == "ERROR"
    assert finetune["otel:exception.type"] == "RuntimeError"

    parent_of = {r["prov:informed"]: r["prov:informant"] for r in doc["wasInformedBy"].values()}
    epochs = {
        name: [
            k
            for k, a in activities.items()
            if a.get("prov:type") == "provtel:Epoch" and parent_of[k] == run
        ]
        for name, run in runs.items()
    }
    assert len(epochs["pretrain"]) == 2 and len(epochs["finetune"]) == 1
    # each run counts its own epochs and steps from zero
    assert sorted(activities[k]["otel:ml.epoch"] for k in epochs["pretrain"]) == [0, 1]
    assert [activities[k]["otel:ml.epoch"] for k in epochs["finetune"]] == [0]
    assert (
        activities[runs["pretrain"]]["prov:endTime"]
        <= activities[runs["finetune"]]["prov:startTime"]
    )

    hparams = {
        (e["prov:label"], e["prov:value"])
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:HyperParameter"
    }
    assert {("stage", 1), ("stage", 2)} <= hparams
    # the fine-tuning run used the checkpoint the pretraining run saved
    (saved,) = [
        g["prov:entity"]
        for g in doc["wasGeneratedBy"].values()
        if doc["entity"][g["prov:entity"]]["prov:type"] == "provml:Model"
    ]
    used = [u for u in doc["used"].values() if u["prov:entity"] == saved]
    assert [parent_of[u["prov:activity"]] for u in used] == [runs["finetune"]]


def test_a_launcher_traceparent_becomes_the_run_parent(tmp_path: Path) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = clean_env(TRACEPARENT=f"00-{trace_id}-{parent}-01")
    result = run_instrumented(SCRIPT, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)
    runs = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:Run"]
    assert len(runs) == 2
    for run in runs:
        assert run["otel:trace_id"] == trace_id and run["otel:parent_span_id"] == parent
    # the launcher's span is not in this document: declared as a placeholder, runs associated
    assert doc["activity"][f"run:span_{parent}"]["provtel:placeholder"] is True
    associated = {a["prov:activity"] for a in doc["wasAssociatedWith"].values()}
    assert len(associated) == 2
