"""Runs: grouping by trace, metric attribution, finalisation, restarts, safe names."""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.otlp import convert_metrics, convert_spans
from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.receiver.runs import MARKER, PENDING_DIR, Overloaded, Router
from tests.receiver.helpers import (
    documents,
    metrics_request,
    resource,
    trace_request,
    training_spans,
)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spans_of(res: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return convert_spans(trace_request(training_spans(res, **kwargs))).records


def points_of(res: Any, **kwargs: Any) -> Any:
    return convert_metrics(metrics_request(res, **kwargs)).groups


def make_router(tmp_path: Path, clock: Clock, **kwargs: Any) -> Router:
    return Router(tmp_path / "out", grace_s=10, idle_s=100, clock=clock, **kwargs)


def metric_rows(run_dir: Path, label: str) -> list[float]:
    rows = []
    for path in sorted((run_dir / "metrics").glob(f"{label}*.csv")):
        with open(path) as f:
            rows += [float(r["value"]) for r in csv.DictReader(f)]
    return rows


def test_ranks_of_a_job_merge_into_one_run_finalised_after_all_roots(tmp_path: Path) -> None:
    clock = Clock()
    router = make_router(tmp_path, clock)
    router.add_metrics(points_of(resource(rank=0, world=2), steps=3))  # before any span
    router.add_spans(spans_of(resource(rank=0, world=2), seed=0))
    clock.now += 60
    assert router.tick() == []  # rank 1's root has not arrived: rank 0 finishing is not enough
    router.add_spans(spans_of(resource(rank=1, world=2), seed=1))
    router.add_metrics(points_of(resource(rank=1, world=2), steps=5))
    clock.now += 9
    assert router.tick() == []  # within the grace period
    clock.now += 2
    (doc,) = router.tick()

    assert [p.parent for p in documents(tmp_path / "out")] == [doc.parent]
    data = assert_valid(doc)
    agents = [a for a in data["agent"].values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    assert sorted(a["otel:ml.rank"] for a in agents) == [0, 1]
    runs = [a for a in data["activity"].values() if a.get("prov:type") == "provtel:Run"]
    assert len(runs) == 2  # one run span per rank
    assert sorted(metric_rows(doc.parent, "ml.steps")) == [3, 5]  # pending points were moved in
    assert not (tmp_path / "out" / PENDING_DIR).exists() or not any(
        (tmp_path / "out" / PENDING_DIR).iterdir()
    )
    assert not (doc.parent / MARKER).exists() and not (doc.parent / "journal.jsonl").exists()


def test_one_root_is_enough_without_a_job_size(tmp_path: Path) -> None:
    clock = Clock()
    router = make_router(tmp_path, clock)
    router.add_spans(spans_of(resource()))
    clock.now += 10
    (doc,) = router.tick()
    assert_valid(doc)


def test_idle_runs_are_finalised_without_a_root(tmp_path: Path) -> None:
    clock = Clock()
    router = make_router(tmp_path, clock)
    router.add_spans(spans_of(resource(), root=False))  # the process died before its run ended
    clock.now += 99
    assert router.tick() == []
    clock.now += 1
    (doc,) = router.tick()
    data = assert_valid(doc)
    placeholders = [a for a in data["activity"].values() if a.get("provtel:placeholder")]
    assert len(placeholders) == 1  # the run span never arrived


def test_metrics_without_spans_become_a_run_of_their_own(tmp_path: Path) -> None:
    clock = Clock()
    router = make_router(tmp_path, clock)
    lonely = resource(**{"service.name": "exporter-only"})
    router.add_metrics(points_of(lonely, steps=7))
    clock.now += 100
    (doc,) = router.tick()
    assert doc.parent.name.startswith("exporter-only-metrics-")
    data = assert_valid(doc)
    metrics = [e for e in data["entity"].values() if e["prov:type"] == "provml:Metric"]
    assert {m["prov:label"] for m in metrics} == {"ml.steps", "ml.loss", "ml.step.duration"}
    assert metric_rows(doc.parent, "ml.steps") == [7]


def test_untrusted_names_stay_inside_the_output_and_never_collide(tmp_path: Path) -> None:
    clock = Clock()
    router = make_router(tmp_path, clock)
    evil = resource(**{"service.name": "../../../etc/passwd\x00;rm -rf ~"})
    router.add_spans(spans_of(evil, trace_id=1))
    router.add_spans(spans_of(evil, trace_id=2))
    out = (tmp_path / "out").resolve()
    dirs = [r.dir.resolve() for r in router.runs]
    assert len(set(dirs)) == 2
    for d in dirs:
        assert d.parent == out  # one path component under the output, whatever the name
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", d.name)
    clock.now += 10
    assert len(router.tick()) == 2


def test_a_restarted_router_continues_the_open_runs(tmp_path: Path) -> None:
    clock = Clock()
    first = make_router(tmp_path, clock)
    # A client re-sends what it sent before (same ids, same times) when the receiver restarts.
    run_span = spans_of(resource(rank=0, world=1))
    # all but the root (copies: the router takes ownership of the records it is given)
    first_spans = copy.deepcopy([s for s in run_span if s.get("parent_span_id")])
    first.add_spans(first_spans)
    first.add_metrics(points_of(resource(rank=0, world=1), steps=2))
    first.add_metrics(points_of(resource(rank=5), steps=9))  # pending: no run has rank 5
    first.close()
    with pytest.raises(Overloaded):  # a closed router refuses (the client retries)
        first.add_spans(spans_of(resource()))

    second = make_router(tmp_path, clock)
    (run,) = second.recover()
    assert run.spans == len(first_spans) and run.roots == set()
    # the same spans again, now with the root
    second.add_spans(run_span)
    second.add_metrics(points_of(resource(rank=0, world=1), steps=4))
    clock.now += 10
    (doc,) = second.tick()
    data = assert_valid(doc)
    ids = {a["otel:span_id"] for a in data["activity"].values() if "otel:span_id" in a}
    assert ids == {s["span_id"] for s in run_span}  # nothing lost, duplicates merged
    assert metric_rows(doc.parent, "ml.steps") == [2, 4]
    # The pending metrics of rank 5 survived the restart too.
    clock.now += 100
    (metrics_only,) = second.tick()
    assert metric_rows(metrics_only.parent, "ml.steps") == [9]


def test_too_many_open_runs_is_retry_later_with_nothing_written(tmp_path: Path) -> None:
    clock = Clock()
    router = make_router(tmp_path, clock, max_runs=1)
    router.add_spans(spans_of(resource(), trace_id=1))
    with pytest.raises(Overloaded):
        router.add_spans(spans_of(resource(), trace_id=1) + spans_of(resource(), trace_id=2))
    (run,) = router.runs
    assert run.spans == len(spans_of(resource(), trace_id=1))


def test_reopen_repairs_what_a_kill_tore(tmp_path: Path) -> None:
    from provtel.exporter.prov.store import JOURNAL, RunStore

    clock = Clock()
    router = make_router(tmp_path, clock)
    router.add_spans(spans_of(resource(), root=False))
    router.add_metrics(points_of(resource(), steps=1))
    (run,) = router.runs
    router.close()
    # A writer killed mid-line: half a journal record, half a CSV row.
    with open(run.dir / JOURNAL, "a") as journal:
        journal.write('{"t":"span","trace_id":"00')
    (steps_csv,) = (run.dir / "metrics").glob("ml.steps*.csv")
    with open(steps_csv, "a") as rows:
        rows.write("17000000")

    store = RunStore.reopen(run.dir)
    store.add_metric_points(points_of(resource(), steps=3)[0].points)
    doc = store.finalize()
    assert_valid(doc)
    assert metric_rows(run.dir, "ml.steps") == [1, 3]
