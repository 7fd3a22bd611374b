"""The journal: line-atomic appends on a full disk, torn tails, hostile journals, stale spools,
private files (issue 12, items 2, 10, 12, 14)."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provtel.exporter.prov import journal
from provtel.exporter.prov.store import JOURNAL, RunStore, create_run_dir, recover
from provtel.exporter.prov.validate import assert_valid
from tests.support import provtel_cli

BASE = 1_795_000_000_000_000_000


def span(n: int, parent: str | None = "a" * 16, **attributes: Any) -> dict[str, Any]:
    """A span record as the exporter and the receiver build them."""
    return {
        "trace_id": "1" * 32,
        "span_id": f"{n:016x}",
        "parent_span_id": parent,
        "name": f"epoch {n}",
        "kind": "INTERNAL",
        "start": BASE + n,
        "end": BASE + n + 10,
        "status": "UNSET",
        "status_description": None,
        "attributes": {"ml.activity": "epoch", **attributes},
        "events": [],
        "links": [],
        "scope": {"name": "test", "version": None},
        "resource": {"service.name": "svc", "process.owner": "alice"},
    }


class FullDisk(io.FileIO):
    """A journal file on a disk that fills up: the next write lands partially (what fits),
    then fails with ENOSPC, as the kernel does; ``room`` more bytes fit after the user frees
    space."""

    def __init__(self, path: Path, room: int) -> None:
        super().__init__(path, "ab")
        self.room = room

    def write(self, data: Any, /) -> int:
        if self.room is None:
            return super().write(data)
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = super().write(bytes(data[: self.room]))
        self.room -= n
        return n


def activities(doc: dict[str, Any]) -> set[str]:
    return {a["prov:label"] for a in doc["activity"].values() if "otel:span_id" in a}


RESOURCE = {"service.name": "svc", "process.owner": "alice"}


def otlp_payload(spans: list[tuple[int, str]], span_id: bytes | None = None) -> bytes:
    """An encoded OTLP ``TracesData`` of epoch spans ``(n, name)`` of trace 11..1 (what
    ``provtel serve`` journals as an ``otlp_spans`` line)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in RESOURCE.items():
        rs.resource.attributes.add(key=key).value.string_value = value
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for n, name in spans:
        otlp_span = ss.spans.add(
            trace_id=b"\x11" * 16,
            span_id=span_id if span_id is not None else n.to_bytes(8, "big"),
            parent_span_id=b"\xaa" * 8,
            name=name,
            start_time_unix_nano=BASE + n,
            end_time_unix_nano=BASE + n + 10,
        )
        otlp_span.attributes.add(key="ml.activity").value.string_value = "epoch"
    return request.SerializeToString()


def otlp_line(spans: list[tuple[int, str]], span_id: bytes | None = None) -> bytes:
    """The journal line of :func:`otlp_payload`, with its newline."""
    return (journal.encode_otlp_spans(otlp_payload(spans, span_id)) + "\n").encode()


def test_a_full_disk_mid_write_never_glues_a_refused_line_to_the_next(tmp_path: Path) -> None:
    run_dir = create_run_dir(tmp_path, "full")
    disk = FullDisk(run_dir / JOURNAL, room=1500)
    store = RunStore(run_dir, journal_file=disk)
    store.add_spans([span(1)])  # fits
    message = "débordement ✓ " * 200  # non-ASCII: the cut lands inside a multi-byte character
    with pytest.raises(OSError, match="No space left"):
        store.add_spans([span(2, status_description=message)])
    assert (run_dir / JOURNAL).read_bytes().endswith(b"\n")  # cut back at once
    disk.room = None  # the user frees space; the next requests are acknowledged
    store.add_spans([span(3)])
    store.add_spans([span(4, status_description=message)])
    doc = assert_valid(store.finalize())
    assert activities(doc) == {"epoch 1", "epoch 3", "epoch 4"}


def test_a_refused_write_that_cannot_be_cut_yet_is_cut_before_the_next(tmp_path: Path) -> None:
    class Stuck(FullDisk):
        cuts = 0

        def truncate(self, size: Any = None, /) -> int:
            self.cuts += 1
            if self.cuts == 1:
                raise OSError(errno.EIO, "I/O error")
            return super().truncate(size)

    run_dir = create_run_dir(tmp_path, "stuck")
    disk = Stuck(run_dir / JOURNAL, room=900)
    store = RunStore(run_dir, journal_file=disk)
    with pytest.raises(OSError):
        store.add_spans([span(1, note="x" * 2000)])
    assert not (run_dir / JOURNAL).read_bytes().endswith(b"\n")  # the torn line is still there
    disk.room = None
    store.add_spans([span(2)])
    doc = assert_valid(store.finalize())
    assert activities(doc) == {"epoch 2"}


def test_reopen_and_recover_cut_a_tail_torn_inside_a_character(tmp_path: Path) -> None:
    run_dir = create_run_dir(tmp_path, "torn")
    store = RunStore(run_dir)
    store.add_spans([span(1)])
    store.close()
    line = journal.encode(journal.SPAN, {**span(2), "status_description": "é" * 50}).encode()
    with open(run_dir / JOURNAL, "ab") as out:
        out.write(line[: line.index("é".encode()) + 1])  # half of a two-byte character
    recovered = provtel_cli("recover", run_dir)
    assert recovered.returncode == 0, recovered.stderr
    assert "Traceback" not in recovered.stderr
    assert activities(assert_valid(run_dir / "prov.json")) == {"epoch 1"}
    (run_dir / "prov.json").unlink()
    store = RunStore.reopen(run_dir)
    store.add_spans([span(3)])
    assert activities(assert_valid(store.finalize())) == {"epoch 1", "epoch 3"}


_text = st.text(st.characters(codec="utf-8"), max_size=20)
_records = st.lists(
    st.builds(
        lambda n, name, note: {
            **span(n),
            "name": name,
            "attributes": {"note": note},
            "resource": "r1",
        },
        st.integers(1, 2**40),
        _text,
        _text,
    ),
    max_size=6,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=_records,
    cut=st.integers(0, 10_000),
    garbage=st.lists(st.binary(max_size=40), max_size=4),
    at=st.integers(0, 6),
)
def test_fuzz_the_reader_never_raises_and_keeps_every_whole_record(
    tmp_path: Path, records: list[dict[str, Any]], cut: int, garbage: list[bytes], at: int
) -> None:
    lines = [
        (journal.encode(journal.SPAN, r) + "\n").encode("utf-8", "surrogatepass") for r in records
    ]
    # Garbage lines (invalid UTF-8, binary, half records) in the middle, a torn tail at the end.
    noise = [g.replace(b"\n", b"") + b"\n" for g in garbage]
    body = lines[:at] + noise + lines[at:]
    data = b"".join(body)
    torn = data[: len(data) - cut % (len(data) + 1)] if data else b""
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(torn)
    problems: list[str] = []
    got = [r.data["span_id"] for r in journal.read(path, problems)]
    # Every record whose whole line (with its newline) survived is read, in order.
    whole, pos = [], 0
    for chunk, rec in [(ln, r) for ln, r in zip(lines, records, strict=True)]:
        pos = torn.find(chunk, pos)
        if pos < 0:
            break
        whole.append(rec["span_id"])
        pos += len(chunk)
    assert [s for s in got if s in whole] == whole
    assert all(isinstance(p, str) and p.startswith("line ") for p in problems)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (bytes(range(255, -1, -1)).replace(b"\n", b"") * 40, "not UTF-8"),
        (b"[1,2,3]\n", "not a journal record (a JSON list)"),
        (b'{"t":"span","trace_id":"' + b"1" * 32 + b'","start":1}\n', "span_id must be"),
        (b'{"t":"span","trace_id":"1","span_id":"2","start":"x"}\n', "start must be"),
        (b'{"t":"span","trace_id":"1","span_id":"2","start":1e300}\n', "start must be"),
        (b'{"t":"otlp_spans","data":"!!!!"}\n', "data must be base64"),
        (b'{"t":"otlp_spans"}\n', "data must be base64, not missing"),
        (b'{"t":"otlp_spans","data":"CgP//w=="}\n', "not OTLP spans"),  # b"\n\x03\xff\xff"
        (otlp_line([(9, "epoch 9")], span_id=bytes(8)), "1 span(s) left out: span_id must be"),
    ],
    ids=[
        "binary", "array", "no-span-id", "start-x", "start-1e300", "otlp-not-base64",
        "otlp-no-data", "otlp-not-protobuf", "otlp-zero-span-id",
    ],
)  # fmt: skip
def test_recover_and_merge_say_what_is_wrong_in_one_line(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    # A good run, then the hostile line appended to its journal (and a good record after it).
    job = tmp_path / "job"
    run_dir = create_run_dir(job, "rank0")
    store = RunStore(run_dir)
    store.add_spans([span(1)])
    store.close()
    with open(run_dir / JOURNAL, "ab") as out:
        out.write(content if content.endswith(b"\n") else content + b"\n")
    store = RunStore.reopen(run_dir)
    store.add_spans([span(2)])
    store.close()

    recovered = provtel_cli("recover", run_dir)
    assert recovered.returncode == 0, recovered.stderr
    assert "Traceback" not in recovered.stderr
    (line,) = [ln for ln in recovered.stderr.splitlines() if reason in ln]
    assert str(run_dir) in line and "skipped" in line
    assert activities(assert_valid(run_dir / "prov.json")) == {"epoch 1", "epoch 2"}

    merged = provtel_cli("merge", job)
    assert merged.returncode == 0, merged.stderr
    assert "Traceback" not in merged.stderr and reason in merged.stderr
    assert activities(assert_valid(job / "prov.json")) == {"epoch 1", "epoch 2"}


_otlp_lines = st.lists(st.lists(st.tuples(st.just(0), _text), min_size=1, max_size=4), max_size=5)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    groups=_otlp_lines,
    cut=st.integers(0, 100_000),
    garbage=st.lists(st.binary(max_size=40), max_size=3),
    at=st.integers(0, 5),
    flip=st.none() | st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 255)),
)
def test_fuzz_otlp_span_lines_torn_damaged_or_among_garbage_never_raise(
    tmp_path: Path,
    groups: list[list[tuple[int, str]]],
    cut: int,
    garbage: list[bytes],
    at: int,
    flip: tuple[int, int, int] | None,
) -> None:
    """``otlp_spans`` lines (the receiver's) with a torn tail, a byte changed inside one of
    them (invalid base64, UTF-8 or protobuf) and garbage lines between them: the reader never
    raises, yields the spans of every whole, intact line in order (with their resource record's
    id), and reports every other line as ``line N: reason``."""
    # Span ids of different lines differ in every byte: a changed byte cannot make one another.
    groups = [
        [(int.from_bytes(bytes([i + 1]) * 8, "big") + j, name) for j, (_, name) in enumerate(g)]
        for i, g in enumerate(groups)
    ]
    lines = [otlp_line(group) for group in groups]
    damaged = -1
    if flip is not None and lines:
        damaged, offset, byte = flip[0] % len(lines), flip[1], flip[2]
        line = bytearray(lines[damaged])
        offset %= len(line) - 1  # never the newline
        line[offset] = byte if byte != 0x0A else 0x00
        lines[damaged] = bytes(line)
    noise = [g.replace(b"\n", b"") + b"\n" for g in garbage]
    data = b"".join(lines[:at] + noise + lines[at:])
    torn = data[: len(data) - cut % (len(data) + 1)] if data else b""
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(torn)
    problems: list[str] = []
    got = [(r.kind, r.data["span_id"], r.data["resource"]) for r in journal.read(path, problems)]
    rid = journal.resource_id(RESOURCE)
    whole, pos = [], 0
    for i, (line, group) in enumerate(zip(lines, groups, strict=True)):
        pos = torn.find(line, pos)
        if pos < 0:
            break
        pos += len(line)
        if i != damaged:
            whole += [(journal.SPAN, f"{n:016x}", rid) for n, _ in group]
    assert [g for g in got if g in whole] == whole
    assert all(kind == journal.SPAN for kind, _, _ in got)
    assert all(isinstance(p, str) and p.startswith("line ") for p in problems)


def test_otlp_span_lines_recover_and_merge_as_span_records_do(tmp_path: Path) -> None:
    """A rank whose journal holds the receiver's ``otlp_spans`` lines and one with span
    records: ``provtel recover`` and ``provtel merge`` read both alike -- every span an activity
    with its times and resource agent, in valid documents."""
    job = tmp_path / "job"
    served = RunStore(create_run_dir(job, "rank0"))
    served.add_otlp_spans(otlp_payload([(1, "epoch 1"), (2, "epoch 2")]), [RESOURCE])
    served.add_otlp_spans(otlp_payload([(3, "epoch 3")]), [RESOURCE])
    served.close()
    local = RunStore(create_run_dir(job, "rank1"))
    local.add_spans([span(4)])
    local.close()

    recovered = provtel_cli("recover", served.dir)
    assert recovered.returncode == 0, recovered.stderr
    doc = assert_valid(served.dir / "prov.json")
    assert activities(doc) == {"epoch 1", "epoch 2", "epoch 3"}
    times = {a["prov:label"]: a["prov:startTime"] for a in doc["activity"].values()}
    assert times["epoch 3"] == "2026-11-18T11:06:40.000000Z"  # BASE + 3 ns
    agents = [a for a in doc["agent"].values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    assert [a["prov:label"] for a in agents] == ["svc"]

    merged = provtel_cli("merge", job)
    assert merged.returncode == 0, merged.stderr
    assert activities(assert_valid(job / "prov.json")) == {f"epoch {n}" for n in (1, 2, 3, 4)}

    (served.dir / "prov.json").unlink()  # recovered, not finished: the run continues
    reopened = RunStore.reopen(served.dir)
    reopened.add_otlp_spans(otlp_payload([(5, "epoch 5")]), [RESOURCE])
    final = assert_valid(reopened.finalize())
    assert activities(final) == {f"epoch {n}" for n in (1, 2, 3, 5)}
    assert not (reopened.dir / JOURNAL).exists()


def test_a_journal_with_no_record_at_all_is_one_clear_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "noise"
    run_dir.mkdir()
    (run_dir / JOURNAL).write_bytes(os.urandom(3000).replace(b"\n", b"") + b"\n[1,2,3]\n")
    result = provtel_cli("recover", run_dir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"provtel recover: {run_dir}") and "not a provtel journal" in line
    assert not (run_dir / "prov.json").exists()


def test_a_kill_during_finalisation_leaves_nothing_behind_after_recovery(tmp_path: Path) -> None:
    output = tmp_path / "prov"
    run_dir = create_run_dir(output, "killed")
    store = RunStore(run_dir)
    store.add_spans([span(1)])
    store.close()
    # What a process killed inside ProvJsonWriter leaves: a spool folder and a partial document.
    spool = run_dir / ".prov-spool-abc123"
    spool.mkdir()
    (spool / "activity").write_bytes(b'"run:x":{')
    (run_dir / "prov.json.tmp").write_bytes(b'{"prefix":')
    result = provtel_cli("recover", output)  # the output folder: every unfinished run under it
    assert result.returncode == 0, result.stderr
    assert_valid(run_dir / "prov.json")
    assert sorted(p.name for p in run_dir.iterdir()) == ["journal.jsonl", "metrics", "prov.json"]


def test_recover_an_output_folder_recovers_every_unfinished_run(tmp_path: Path) -> None:
    output = tmp_path / "prov"
    unfinished = []
    for n in range(3):
        store = RunStore(create_run_dir(output, f"run{n}"))
        store.add_spans([span(n + 1)])
        if n == 1:
            store.finalize()  # this one finished: left alone
        else:
            store.close()
            unfinished.append(store.dir)
    result = provtel_cli("recover", output)
    assert result.returncode == 0, result.stderr
    for run_dir in unfinished:
        assert str(run_dir) in result.stdout
        assert_valid(run_dir / "prov.json")
    assert len(list(output.glob("*/prov.json"))) == 3
    again = provtel_cli("recover", output)
    assert again.returncode == 0 and "nothing to recover" in again.stdout


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_folders_and_files_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_FORMATS", "json,provn")
    old = os.umask(0o022)
    try:
        store = RunStore(create_run_dir(tmp_path, "private"), formats=("json", "provn"))
        store.add_spans([span(1, **{"ml.step.first": 0, "ml.step.loss": [0.5]})])
        document = store.finalize()
        assert _mode(store.dir) == 0o700 and _mode(store.dir / "metrics") == 0o700
        files = [p for p in store.dir.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"prov.json", "prov.provn", "loss_training.csv"}
        assert {_mode(p) for p in files} == {0o600}
        monkeypatch.setenv("OTEL_PYTHON_PROVTEL_FILE_MODE", "0640")
        shared = RunStore(create_run_dir(tmp_path, "shared"))
        shared.add_spans([span(2)])
        shared_doc = shared.finalize()
        assert _mode(shared.dir) == 0o750 and _mode(shared_doc) == 0o640
    finally:
        os.umask(old)
    assert json.loads(document.read_text())["prefix"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_span_fields = st.fixed_dictionaries(
    {},
    optional={
        key: _json_values
        for key in (
            "trace_id", "span_id", "parent_span_id", "name", "kind", "start", "end", "status",
            "status_description", "attributes", "events", "links", "scope", "resource",
            "parent_is_remote",
        )
    },
)  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=_span_fields, base=st.booleans())
def test_fuzz_every_record_the_reader_accepts_maps_to_a_valid_document(
    tmp_path: Path, fields: dict[str, Any], base: bool
) -> None:
    """Hostile field values: the reader refuses a line with a reason, or the record maps to a
    document the validator accepts -- recovery never dies on what a journal holds."""
    record = {**span(1), "resource": "r1", **fields} if base else fields
    line = (journal.encode(journal.SPAN, record) + "\n").encode("utf-8", "surrogatepass")
    run_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    (run_dir / JOURNAL).write_bytes(line)
    problems: list[str] = []
    try:
        document = recover(run_dir, problems)
    except journal.JournalError:
        assert not list(journal.read(run_dir / JOURNAL, []))  # refused, with a reason
        return
    assert_valid(document, round_trips=False)


class _Float(float):
    """A float subclass, as numpy.float64 is."""


_exotic_text = st.text(st.characters(codec=None), max_size=8) | st.sampled_from(
    ["null", "a null", "\ud800", "NaN"]
)
_exotic_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.floats().map(_Float)
    | _exotic_text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(_exotic_text | st.integers(-3, 3), inner, max_size=3)
    ),
    max_leaves=10,
)


def _as_read(line: str) -> str:
    """A journal line's values, re-encoded by the standard encoder (NaN compares as text)."""
    value = json.loads(line, parse_constant=float)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


@settings(max_examples=400, deadline=None)
@given(
    attributes=st.dictionaries(_exotic_text, _exotic_values, max_size=4),
    events=st.lists(_exotic_values, max_size=2),
    status_description=st.none() | _exotic_text,
    scope_version=st.none() | _exotic_text,
)
def test_fuzz_a_line_holds_exactly_what_the_standard_encoder_writes(
    attributes: dict[str, Any],
    events: list[Any],
    status_description: str | None,
    scope_version: str | None,
) -> None:
    """The fast encoder (orjson) never changes a value: NaN and infinities stay (orjson alone
    writes null), big integers, lone surrogates, non-string keys and float subclasses too."""
    record = {
        **span(1),
        "resource": "r1",
        "attributes": attributes,
        "events": [{"name": "e", "time": BASE, "attributes": {"v": v}} for v in events],
        "status_description": status_description,
        "scope": {"name": "test", "version": scope_version},
    }
    for kind, data in ((journal.SPAN, record), (journal.RESOURCE, {"id": "r", **attributes})):
        line = journal.encode(kind, data)
        expected = json.dumps(
            {"t": kind, **data}, ensure_ascii=False, separators=(",", ":"), default=str
        )
        assert _as_read(line) == _as_read(expected)


def test_non_finite_floats_survive_a_run_store_round_trip(tmp_path: Path) -> None:
    """NaN and infinities in attributes, events and nested values read back as they went in."""
    run_dir = create_run_dir(tmp_path, "nan")
    store = RunStore(run_dir)
    store.add_spans(
        [
            {
                **span(1, loss=math.nan, best=math.inf, deep=[1, {"k": [-math.inf]}]),
                "events": [{"name": "e", "time": BASE, "attributes": {"x": _Float("nan")}}],
            },
            span(2, note="null"),  # a 'null' in a string, no NaN: the fast path
        ]
    )
    store.close()
    spans = [r.data for r in journal.read(run_dir / JOURNAL) if r.kind == journal.SPAN]
    first = spans[0]["attributes"]
    assert math.isnan(first["loss"]) and first["best"] == math.inf
    assert first["deep"] == [1, {"k": [-math.inf]}]
    assert math.isnan(spans[0]["events"][0]["attributes"]["x"])
    assert spans[1]["attributes"]["note"] == "null"
    assert spans[1]["status_description"] is None
