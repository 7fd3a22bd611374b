"""Per-step series: spooled in binary while the run goes, the same CSV as before at the end.

A step block arrives with plain arrays (older clients) or packed columns
(:mod:`provtel.semconv.columns`); both give byte for byte the CSV rows provtel has always
written (``str`` of each value), and the CSV is written from the spool when the document is
written -- at finalisation, or by ``provtel recover`` after a kill, whatever was torn.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.series import SPOOL_SUFFIX
from provtel.exporter.prov.store import RunStore, create_run_dir, recover
from provtel.exporter.prov.validate import assert_valid
from provtel.semconv import attributes as sc
from provtel.semconv import columns

T0 = 1_795_000_000_123_456_789
LOSSES = [0.5, math.nan, -0.0, 1e-300, math.inf, 0.1 + 0.2]
RATES = [0.01] * 6
SIZES = [8, 8, 8, 8, 8, -1]
STARTS = [T0 + 1_000_000 * i for i in range(6)]
#: What provtel wrote for these rows before the spool (``str`` of each value).
LOSS_ROWS = [
    f"{10 + i},3,{v},{s // 1_000_000},{s}"
    for i, (v, s) in enumerate(zip(LOSSES, STARTS, strict=True))
]


def block(trace: int, span: int, packed: bool, first: int = 10, **extra: Any) -> dict[str, Any]:
    arrays: dict[str, list[Any]] = {
        sc.ML_STEP_START: STARTS,
        sc.ML_STEP_LOSS: LOSSES,
        sc.ML_STEP_LEARNING_RATE: RATES,
        sc.ML_STEP_BATCH_SIZE: SIZES,
    }
    attributes: dict[str, Any] = {
        sc.ML_ACTIVITY: "step_block",
        sc.ML_CONTEXT: "training",
        sc.ML_EPOCH: 3,
        sc.ML_STEP_FIRST: first,
        sc.ML_STEP_COUNT: 6,
    }
    for name, values in arrays.items():
        if packed:
            attributes[columns.packed_name(name)] = columns.encode(values)
        else:
            attributes[name] = tuple(values)  # the SDK hands arrays over as tuples
    attributes.update(extra)
    return {
        "trace_id": f"{trace:032x}",
        "span_id": f"{span:016x}",
        "parent_span_id": None,
        "name": "ml.step_block",
        "kind": "INTERNAL",
        "start": STARTS[0],
        "end": STARTS[-1] + 1,
        "status": "UNSET",
        "attributes": attributes,
        "events": [],
        "links": [],
        "resource": {"service.name": "train"},
        "scope": {"name": "provtel.instrumentation.torch"},
    }


def metric(doc: dict[str, Any], label: str) -> dict[str, Any]:
    (entity,) = [
        e
        for e in doc["entity"].values()
        if e.get("prov:type") == "provml:Metric" and e["prov:label"] == label
    ]
    return entity


def rows(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text.split("\n")[1:-1]


@pytest.mark.parametrize("packed", [False, True])
def test_a_block_gives_the_rows_provtel_always_wrote(tmp_path: Path, packed: bool) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    store.add_spans([block(1, 1, packed)])
    metrics = store.dir / "metrics"
    # while the run goes: a binary spool per series, no CSV yet
    assert sorted(p.name for p in metrics.iterdir()) == [
        f"batch_size_training.csv{SPOOL_SUFFIX}",
        f"learning_rate_training.csv{SPOOL_SUFFIX}",
        f"loss_training.csv{SPOOL_SUFFIX}",
    ]
    document = store.finalize()
    doc = assert_valid(document)
    loss = metric(doc, "loss")
    assert loss["dcterms:identifier"] == "metrics/loss_training.csv"
    assert sorted(p.name for p in metrics.iterdir()) == [
        "batch_size_training.csv",
        "learning_rate_training.csv",
        "loss_training.csv",
    ]
    path = document.parent / loss["dcterms:identifier"]
    assert path.read_text().split("\n")[0] == "step,epoch,value,timestep,time_unix_nano"
    assert rows(path) == LOSS_ROWS
    assert (
        rows(metrics / "batch_size_training.csv")[-1] == f"15,3,-1,{STARTS[5] // 10**6},{STARTS[5]}"
    )
    with open(path, encoding="utf-8") as f:
        values = [float(r["value"]) for r in csv.DictReader(f)]
    assert [struct.pack("<d", v) for v in values] == [struct.pack("<d", v) for v in LOSSES]
    assert loss["provtel:count"] == 6
    # no array (nor packed column) inside PROV
    (activity,) = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:StepBlock"]
    assert not [
        k
        for k in activity
        if k.startswith("otel:ml.step.") and k != "otel:ml.step.first" and k != "otel:ml.step.count"
    ]


def test_packed_and_plain_blocks_write_identical_files(tmp_path: Path) -> None:
    texts = []
    for packed in (False, True):
        store = RunStore(create_run_dir(tmp_path / str(packed), "train"))
        store.add_spans([block(1, 1, packed, first=0), block(1, 2, packed, first=6)])
        document = store.finalize()
        texts.append({p.name: p.read_bytes() for p in (document.parent / "metrics").iterdir()})
    assert texts[0] == texts[1]
    assert len(texts[0]["loss_training.csv"].split(b"\n")) == 1 + 12 + 1


def test_plain_arrays_of_unusual_types_keep_their_text(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    odd = block(1, 1, False)
    odd["attributes"][sc.ML_STEP_LOSS] = (1, 2.5, None, 3, 4, 5)  # mixed, with a hole
    odd["attributes"][sc.ML_STEP_START] = (STARTS[0], None, *STARTS[2:])
    store.add_spans([odd])
    document = store.finalize()
    lines = rows(document.parent / "metrics" / "loss_training.csv")
    assert lines[:3] == [
        f"10,3,1,{STARTS[0] // 10**6},{STARTS[0]}",
        "11,3,2.5,,",
        f"12,3,,{STARTS[2] // 10**6},{STARTS[2]}",
    ]
    lr = rows(document.parent / "metrics" / "learning_rate_training.csv")
    assert lr[1] == "11,3,0.01,,"  # a missing start leaves the time cells empty


def test_both_forms_in_one_span_count_once(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    both = block(1, 1, True)
    both["attributes"][sc.ML_STEP_LOSS] = tuple(LOSSES)
    store.add_spans([both])
    doc = assert_valid(store.finalize())
    assert metric(doc, "loss")["provtel:count"] == 6


def test_a_column_cut_short_stays_an_attribute_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    cut = block(1, 1, True)
    key = columns.packed_name(sc.ML_STEP_LOSS)
    cut["attributes"][key] = cut["attributes"][key][:40]  # an attribute value length limit
    with caplog.at_level(logging.WARNING):
        store.add_spans([cut])
    assert "not a whole packed column" in caplog.text
    doc = assert_valid(store.finalize())
    assert not [e for e in doc["entity"].values() if e.get("prov:label") == "loss"]
    (activity,) = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:StepBlock"]
    assert "otel:ml.step.loss.packed" in activity  # nothing silently dropped
    assert metric(doc, "learning_rate")["provtel:count"] == 6


def test_a_killed_run_is_recovered_from_its_spools_even_torn(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    store.add_spans([block(1, 1, True, first=0), block(1, 2, True, first=6)])
    store._files.close()  # what a kill leaves: the files as written, nothing finalised
    spool = store.dir / "metrics" / f"loss_training.csv{SPOOL_SUFFIX}"
    with open(spool, "ab") as f:
        f.write(b"PS\x01d" + b"\xff" * 50)  # a record torn by the kill
    document = recover(store.dir)
    doc = assert_valid(document)
    assert metric(doc, "loss")["provtel:count"] == 12
    lines = rows(document.parent / "metrics" / "loss_training.csv")
    assert [int(line.split(",")[0]) for line in lines] == list(range(12))
    assert not spool.exists()


def test_a_damaged_record_ends_the_readable_spool(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    store.add_spans([block(1, 1, True, first=0), block(1, 2, True, first=6)])
    store._files.close()
    spool = store.dir / "metrics" / f"loss_training.csv{SPOOL_SUFFIX}"
    data = bytearray(spool.read_bytes())
    data[-3] ^= 0xFF  # a power cut: the last record's bytes never reached the disk
    spool.write_bytes(bytes(data))
    doc = assert_valid(recover(store.dir))
    assert metric(doc, "loss")["provtel:count"] == 6


def test_a_reopened_run_repairs_and_continues_its_spools(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    store.add_spans([block(1, 1, True, first=0)])
    store.close()
    spool = store.dir / "metrics" / f"loss_training.csv{SPOOL_SUFFIX}"
    with open(spool, "ab") as f:
        f.write(b"PS\x01")
    again = RunStore.reopen(store.dir)
    again.add_spans([block(1, 2, True, first=6)])
    document = again.finalize()
    lines = rows(document.parent / "metrics" / "loss_training.csv")
    assert [int(line.split(",")[0]) for line in lines] == list(range(12))
    assert metric(assert_valid(document), "loss")["provtel:count"] == 12


def test_a_run_an_older_provtel_wrote_to_csv_continues_after_its_rows(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "train"))
    store.add_spans([block(1, 1, True, first=0)])
    store.close()
    metrics = store.dir / "metrics"
    old = RunStore.reopen(store.dir)
    for s in old._series.values():
        s.write_csv(store.dir)  # as an older provtel left it: the rows in the CSV, no spool
    old.close()
    assert not list(metrics.glob(f"*{SPOOL_SUFFIX}"))
    again = RunStore.reopen(store.dir)
    again.add_spans([block(1, 2, True, first=6)])
    document = again.finalize()
    lines = rows(document.parent / "metrics" / "loss_training.csv")
    assert [int(line.split(",")[0]) for line in lines] == list(range(12))


def test_metric_series_keep_a_bounded_number_of_files_open(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "gauges"))
    fds = len(os.listdir("/proc/self/fd"))
    resource = {"service.name": "train"}
    for round_ in range(2):
        points = [
            {
                "resource": resource,
                "scope": {"name": "bench"},
                "name": "hw.power",
                "unit": "W",
                "description": "",
                "type": "gauge",
                "attributes": {"hw.id": f"gpu{i}"},
                "time": T0 + round_,
                "start": None,
                "value": float(i),
            }
            for i in range(300)
        ]
        store.add_metric_points(points)
    assert len(os.listdir("/proc/self/fd")) - fds <= 64
    document = store.finalize()
    assert len(os.listdir("/proc/self/fd")) <= fds
    assert rows(document.parent / "metrics" / "hw.power_gpu7.csv") == [
        f"{T0},,7.0,{T0 // 10**6}",
        f"{T0 + 1},,7.0,{(T0 + 1) // 10**6}",
    ]


def test_repeated_values_keep_their_own_text() -> None:
    # A column of few distinct values (a constant learning rate) is formatted value by value
    # once: -0.0 and 0.0, and NaN, must still each keep their own text.
    from array import array

    from provtel.exporter.prov.series import StepRows

    values = [0.0, -0.0, math.nan, 0.01, 1e-5] * 200
    starts = array("q", [T0 + i for i in range(len(values))])
    text = StepRows(array("d", values), first=0, epoch="1", starts=starts).text()
    expected = "".join(
        f"{i},1,{v},{s // 1_000_000},{s}\n"
        for i, (v, s) in enumerate(zip(values, starts, strict=True))
    )
    assert text == expected


def test_runs_can_share_one_pool_of_open_files(tmp_path: Path) -> None:
    from provtel.exporter.prov.files import OpenFiles

    pool = OpenFiles(limit=4)
    stores = [RunStore(create_run_dir(tmp_path, f"run{i}"), files=pool) for i in range(2)]
    for round_ in range(3):
        for n, store in enumerate(stores):
            store.add_spans([block(n + 1, round_ + 1, True, first=6 * round_)])
    assert len(pool._open) == 4  # 2 runs x 3 series, the pool's limit
    first = stores[0].finalize()
    assert all(not p.is_relative_to(stores[0].dir) for p in pool._open)  # only its own closed
    stores[1].add_spans([block(2, 9, True, first=18)])
    second = stores[1].finalize()
    assert not pool._open
    for document, steps in ((first, 18), (second, 24)):
        lines = rows(document.parent / "metrics" / "loss_training.csv")
        assert [int(line.split(",")[0]) for line in lines] == list(range(steps))
        assert metric(assert_valid(document), "loss")["provtel:count"] == steps


def test_a_merge_writes_an_unfinished_ranks_csv_and_leaves_its_spool(tmp_path: Path) -> None:
    from provtel.exporter.prov.store import merge_job

    job = tmp_path / "train-job"
    done = RunStore(create_run_dir(job, "rank0"))
    done.add_spans([block(1, 1, True, first=0)])
    done.finalize(keep_journal=True)
    going = RunStore(create_run_dir(job, "rank1"))
    going.add_spans([block(1, 2, True, first=0)])
    spool = going.dir / "metrics" / f"loss_training.csv{SPOOL_SUFFIX}"
    merged = assert_valid(merge_job(job))
    counts = sorted(
        e["provtel:count"]
        for e in merged["entity"].values()
        if e.get("prov:type") == "provml:Metric" and e["prov:label"] == "loss"
    )
    assert counts == [6, 6]
    assert spool.exists()  # the rank may still be writing: its spool stays
    assert len(rows(going.dir / "metrics" / "loss_training.csv")) == 6
    going.add_spans([block(1, 3, True, first=6)])  # the rank goes on, then finishes
    document = going.finalize(keep_journal=True)
    assert len(rows(document.parent / "metrics" / "loss_training.csv")) == 12
    assert not spool.exists()


def test_packed_columns_over_otlp_give_the_same_series(tmp_path: Path) -> None:
    """Remote ranks send packed columns over OTLP: the receiver's conversion and the
    in-process exporter write the same CSV bytes."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from provtel.exporter.prov.otlp import convert_spans
    from provtel.exporter.prov.records import span_record

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    attributes = block(1, 1, True)["attributes"]
    provider.get_tracer("provtel.instrumentation.torch").start_span(
        "ml.step_block", attributes=attributes, start_time=STARTS[0]
    ).end(STARTS[-1] + 1)
    spans = memory.get_finished_spans()
    texts = []
    for name, records in (
        ("sdk", [span_record(s) for s in spans]),
        ("otlp", convert_spans(encode_spans(spans)).records),
    ):
        store = RunStore(create_run_dir(tmp_path / name, "train"))
        store.add_spans(records)
        document = store.finalize()
        texts.append((document.parent / "metrics" / "loss_training.csv").read_text())
    assert texts[0] == texts[1]
    assert texts[0].split("\n")[1:-1] == LOSS_ROWS
