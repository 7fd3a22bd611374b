"""Ids that user code cannot steer: a script that seeds ``random`` keeps every activity."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, run_documents, run_instrumented

SCRIPT = Path(__file__).parent / "scripts" / "reseeding.py"


def _run(folder: Path, epochs: int) -> dict:
    folder.mkdir()
    result = run_instrumented(SCRIPT, str(epochs), cwd=folder, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    (document,) = run_documents(folder / "prov")
    return assert_valid(document)


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run of three epochs, made once: the first test reads it, the second compares its
    trace with another run's."""
    folder = tmp_path_factory.mktemp("ids") / "run"
    return folder, _run(folder, epochs=3)


def test_reseeding_random_loses_no_epoch_and_no_save(three_epochs: tuple[Path, dict]) -> None:
    folder, doc = three_epochs
    done = json.loads((folder / "result.json").read_text())
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


def test_runs_seeded_alike_get_different_traces(
    three_epochs: tuple[Path, dict], tmp_path: Path
) -> None:
    traces = []
    for doc in (three_epochs[1], _run(tmp_path / "second", epochs=3)):  # the same script and seeds
        (trace,) = {a["otel:trace_id"] for a in doc["activity"].values()}
        traces.append(trace)
    assert traces[0] != traces[1]
