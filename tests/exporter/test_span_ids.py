"""Span ids that clash (two runs of a standard SDK seeded alike) are shown, never hidden."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from provtel.exporter.prov.otlp import to_json
from provtel.exporter.prov.validate import check_file
from provtel.exporter.receiver.convert import convert_files
from tests.receiver.helpers import resource, trace_request, training_spans


def test_two_runs_with_the_same_ids_fail_validation(tmp_path: Path) -> None:
    # The SDK's RandomIdGenerator under random.seed(42): the second run repeats every id of the
    # first (trace and spans); a backend, or provtel serve, sees one trace.
    first = training_spans(resource(), trace_id=0xBDD640FB, seed=42)
    second = training_spans(resource(), trace_id=0xBDD640FB, seed=42)
    assert [s.context.span_id for s in first] == [s.context.span_id for s in second]
    source = tmp_path / "otlp.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as out:
        for spans in (first, second):
            out.write(to_json(trace_request(spans)) + "\n")
    (document,) = convert_files([source], tmp_path / "out").documents

    doc = json.loads(document.read_text())
    runs = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:Run"]
    assert len(runs) == 2  # the second run is in the document, not dropped as a re-delivery
    report = check_file(document, round_trips=False)
    duplicates = [p for p in report.problems if "span ids must be unique" in p]
    assert len(duplicates) == len(first)
    assert f"span id {first[0].context.span_id:016x} is used by 2 activities" in "\n".join(
        duplicates
    )


def test_the_same_span_delivered_twice_is_one_activity(tmp_path: Path) -> None:
    spans = training_spans(resource(), trace_id=0xAB, seed=1)
    source = tmp_path / "otlp.jsonl"
    line = to_json(trace_request(spans))
    source.write_text(line + "\n" + line + "\n", encoding="utf-8")  # a retried export
    (document,) = convert_files([source], tmp_path / "out").documents
    report = check_file(document, round_trips=False)
    assert report.ok, report.problems
    doc = json.loads(document.read_text())
    assert len(doc["activity"]) == len(spans)
