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


def test_hostile_files_are_one_line_each_and_every_run_is_still_finalised(tmp_path: Path) -> None:
    """Issue 12, item 10: a non-UTF-8 line, a line nested 10^5 deep, a line beyond the length
    cap (skipped without being held whole), a truncated .gz and a .gz that is not gzip."""
    lines = job_lines()
    rank0 = collector_file(tmp_path / "rank0.jsonl", lines[:2])  # a whole run, read first
    hostile = tmp_path / "hostile.jsonl"
    with open(hostile, "wb") as out:
        out.write(b"\xff\xfe\x00not UTF-8\n")
        out.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
        out.write(b'{"resourceSpans":[' + b" " * (3 << 20) + b"]}\n")  # 3 MiB, cap 1 MiB
        out.write(lines[2].encode() + b"\n")  # rank 1's metrics and spans, after the damage
        out.write(lines[3].encode() + b"\n")
    packed = gzip.compress((lines[3] + "\n").encode())
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text(lines[3] + "\n", encoding="utf-8")  # a copy, mislabelled
    result = subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "convert", str(rank0), str(hostile),
         str(truncated), str(not_gzip), "-o", str(tmp_path / "out"), "--max-line-mib", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    skipped = "provtel convert: skipped"
    problems = [ln for ln in result.stderr.splitlines() if ln.startswith(skipped)]
    assert len(problems) == 5, result.stderr
    assert f"{hostile}:1: not UTF-8" in problems[0]
    assert f"{hostile}:2: nested too deeply" in problems[1]
    assert f"{hostile}:3: line longer than 1 MiB" in problems[2]
    assert f"{truncated}:1: cannot read further" in problems[3]
    assert f"{not_gzip}:1: cannot read further" in problems[4] and "gzip" in problems[4]
    (doc,) = documents(tmp_path / "out")
    data = assert_valid(doc, round_trips=False)
    ranks = sorted(a["otel:ml.rank"] for a in data["agent"].values() if "otel:ml.rank" in a)
    assert ranks == [0, 1]  # both ranks: nothing readable was lost
    assert result.stdout.strip() == str(doc)


def test_a_huge_line_is_never_held_whole(tmp_path: Path) -> None:
    """A 200 MiB line compresses to a small .gz; reading it skips it a block at a time."""
    source = tmp_path / "huge.jsonl.gz"
    with gzip.open(source, "wb", compresslevel=1) as out:
        out.write(b'{"resourceSpans":["')
        block = b"a" * (1 << 20)
        for _ in range(200):
            out.write(block)
        out.write(b'"]}\n')
        out.write((job_lines()[1] + "\n").encode())
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from provtel.exporter.receiver.convert import convert_files\n"
        "r = convert_files([Path(sys.argv[1])], Path(sys.argv[2]), max_line_bytes=8 << 20)\n"
        "print(len(r.documents), len(r.problems))\n"
        # VmHWM, not ru_maxrss: Linux keeps the forking parent's (pytest's) peak in ru_maxrss
        # across exec, so a long test session would be measured instead of this process.
        "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(source), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    counts, peak_kib = result.stdout.split("\n")[:2]
    assert counts == "1 1"  # the line skipped as one problem, the next request converted
    assert int(peak_kib) < 400 * 1024, peak_kib  # far below the 200 MiB line and its copies
