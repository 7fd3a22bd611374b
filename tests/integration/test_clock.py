"""One clock for what provtel records: a wall-clock step during the run reorders nothing.

CI caught an epoch ending 1.4 ms before it began: its span started at the SDK's default wall
clock and ended at a monotonic reading converted with an offset taken at start, and the wall
clock had moved meanwhile. The script here steps the wall clock two seconds ahead after its
first epoch (see scripts/clock_step.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from provtel.exporter.prov.validate import assert_valid
from tests.support import (
    activities_of,
    assert_nested,
    clean_env,
    run_documents,
    run_instrumented,
)

SCRIPT = Path(__file__).parent / "scripts" / "clock_step.py"


def _interval(activity: dict) -> tuple[int, int]:
    return activity["otel:start_time_unix_nano"], activity["otel:end_time_unix_nano"]


def test_a_wall_clock_step_during_the_run_keeps_every_interval_in_order(tmp_path: Path) -> None:
    result = run_instrumented(SCRIPT, cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    durations = json.loads((tmp_path / "result.json").read_text())["durations_ns"]
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)  # no activity ends before it starts, no use outside one

    epochs = activities_of(doc, "Epoch")
    assert [e["otel:ml.epoch"] for e in epochs] == [0, 1, 2]
    for epoch, measured in zip(epochs, durations, strict=True):
        start, end = _interval(epoch)
        # the epoch lies inside what the script timed around its loop, save and log
        assert 0 <= end - start <= measured
    for before, after in itertools.pairwise(epochs):
        assert _interval(before)[1] <= _interval(after)[0]

    saves = activities_of(doc, "Checkpoint")
    assert len(saves) == 3
    for epoch, save in zip(epochs, saves, strict=True):
        assert _interval(epoch)[1] <= _interval(save)[0] <= _interval(save)[1]

    (run,) = activities_of(doc, "Run")
    run_start, run_end = _interval(run)
    for activity in doc["activity"].values():
        start, end = _interval(activity)
        assert run_start <= start <= end <= run_end, activity["prov:label"]


def test_every_activity_lies_inside_its_parent(tmp_path: Path) -> None:
    """A child span (a pass's first block, the first epoch's, whose first batch also starts the
    run) begins no earlier than its parent and ends no later: a timeline draws it inside."""
    script = Path(__file__).parent / "scripts" / "reseeding.py"  # epochs, saves, a DataLoader
    result = run_instrumented(script, "2", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)
    kinds = {a.get("prov:type") for a in doc["activity"].values() if "otel:parent_span_id" in a}
    assert kinds >= {"provtel:Epoch", "provtel:StepBlock", "provtel:Checkpoint"}
    assert_nested(doc)
