"""Ids that user code cannot steer: a script that seeds ``random`` keeps every activity."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, run_documents, run_instrumented

SCRIPT = Path(__file__).parent / "scripts" / "reseeding.py"


def _run(folder: Path, epochs: int) -> dict:
    folder.mkdir()
    result = run_instrumented(SCRIPT, str(epochs), cwd=folder, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    (document,) = run_documents(folder / "prov")
    return assert_valid(document)


def test_reseeding_random_loses_no_epoch_and_no_save(tmp_path: Path) -> None:
    doc = _run(tmp_path / "run", epochs=3)
    done = json.loads((tmp_path / "run" / "result.json").read_text())
    activities = doc["activity"].values()
    kinds = collections.Counter(a.get("prov:type") for a in activities)
    assert kinds["provtel:Run"] == 1
    assert kinds["provtel:Epoch"] == done["epochs"] == 3
    assert kinds["provtel:Checkpoint"] == 3
    epochs = [a for a in activities if a.get("prov:type") == "provtel:Epoch"]
    assert sorted(a["otel:ml.epoch"] for a in epochs) == [0, 1, 2]
    saved = sorted(
        Path(e["dcterms:identifier"]).name
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:Model" and "dcterms:identifier" in e
    )
    assert saved == done["saves"]
    span_ids = [a["otel:span_id"] for a in activities]
    assert len(span_ids) == len(set(span_ids))
    # every parent is an activity of the document: the tree is whole
    assert {a["otel:parent_span_id"] for a in activities if "otel:parent_span_id" in a} <= set(
        span_ids
    )


def test_runs_seeded_alike_get_different_traces(tmp_path: Path) -> None:
    traces = []
    for name in ("first", "second"):
        doc = _run(tmp_path / name, epochs=1)
        (trace,) = {a["otel:trace_id"] for a in doc["activity"].values()}
        traces.append(trace)
    assert traces[0] != traces[1]
