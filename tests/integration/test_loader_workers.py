"""DataLoader workers (fork, spawn, forkserver, persistent) record nothing of their own, the
main process records every batch and its wait, and nothing hangs at exit."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, run_documents, run_instrumented

SCRIPT = Path(__file__).parent / "scripts" / "loader_workers.py"


@pytest.mark.parametrize(
    ("method", "persistent"),
    [
        ("fork", "no"),
        ("spawn", "no"),
        ("forkserver", "no"),
        ("fork", "persistent"),
        ("spawn", "persistent"),
    ],
)
def test_workers_add_no_telemetry(tmp_path: Path, method: str, persistent: str) -> None:
    result = run_instrumented(SCRIPT, method, persistent, cwd=tmp_path, env=clean_env())
    exited = time.time()
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads((tmp_path / "done.json").read_text())
    # Finalising (spans, metrics, document) after the last line of the script stays short.
    assert exited - done["done_at"] < 15

    (document,) = run_documents(tmp_path / "prov")  # workers left no folders
    doc = assert_valid(document)
    epochs = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:Epoch"]
    assert len(epochs) == 2
    assert sum(a["otel:ml.pass.batches"] for a in epochs) == done["batches"] == 24
    runs = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:Run"]
    assert len(runs) == 1
    agents = [a for a in doc["agent"].values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    assert len(agents) == 1  # only the main process reported anything

    metrics = collections.Counter(
        (e["prov:label"], e.get("yprov:context"))
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:Metric"
    )
    assert metrics and max(metrics.values()) == 1  # no duplicate streams
    (steps,) = [
        e
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:Metric" and e["prov:label"] == "data_wait"
    ]
    assert steps["provtel:count"] == 24  # the wait for every batch, timed in the main process
