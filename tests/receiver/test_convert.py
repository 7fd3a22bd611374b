"""``provtel convert``: Collector file-exporter output -> the documents ``provtel serve`` writes."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

from provtel.exporter.prov.otlp import to_json
from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.receiver.convert import convert_files
from tests.receiver.helpers import (
    documents,
    metrics_request,
    normalised,
    resource,
    trace_request,
    training_spans,
)


def collector_file(path: Path, lines: list[str]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def job_lines() -> list[str]:
    """What a Collector's file exporter writes for a two-rank job: metrics first (the SDK
    exports metrics before spans at exit), then spans."""
    lines = []
    for rank in (0, 1):
        res = resource(rank=rank, world=2)
        lines.append(to_json(metrics_request(res, steps=2 + rank)))
        lines.append(to_json(trace_request(training_spans(res, trace_id=0xAB, seed=rank))))
    return lines


def test_convert_gives_one_document_per_run(tmp_path: Path) -> None:
    lines = job_lines()
    plain = collector_file(tmp_path / "a.jsonl", lines[:2])
    packed = collector_file(tmp_path / "b.jsonl.gz", [*lines[2:], '{"resourceLogs": []}'])
    result = convert_files([plain, packed], tmp_path / "out")
    assert result.problems == []
    (doc,) = result.documents
    data = assert_valid(doc)
    ranks = sorted(a["otel:ml.rank"] for a in data["agent"].values() if "otel:ml.rank" in a)
    assert ranks == [0, 1]
    assert result.spans == sum(len(training_spans(resource())) for _ in (0, 1))
    # The order of files and lines is the order of arrival: the same input, the same document.
    again = convert_files([plain, packed], tmp_path / "again").documents
    assert normalised(again[0]) == normalised(doc)


def test_the_cli_reports_unreadable_lines_and_still_converts(tmp_path: Path) -> None:
    lines = job_lines()
    source = collector_file(
        tmp_path / "otlp.jsonl", [lines[0], "{not json", '{"other": 1}', *lines[1:]]
    )
    result = subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "convert", str(source), "-o",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{source}:2: not JSON" in result.stderr
    assert f"{source}:3: neither resourceSpans nor resourceMetrics" in result.stderr
    (doc,) = documents(tmp_path / "out")
    assert result.stdout.strip() == str(doc)
    assert_valid(doc, round_trips=False)
    missing = subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "convert", str(tmp_path / "nope.jsonl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "no such file" in missing.stderr
