"""The run on disk: unique folders, the journal, recovery, series precision, formats."""

from __future__ import annotations

import json
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import prov
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from provtel.exporter.prov import ProvMetricExporter, ProvSpanExporter
from provtel.exporter.prov.store import JOURNAL, RunStore, build_document, create_run_dir
from provtel.exporter.prov.validate import assert_valid


def _span(span_id: str, parent: str | None, start: int, end: int, **attributes: object) -> dict:
    return {
        "trace_id": "1" * 32,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": span_id,
        "kind": "INTERNAL",
        "start": start,
        "end": end,
        "status": "UNSET",
        "status_description": None,
        "attributes": dict(attributes),
        "events": [],
        "links": [],
        "scope": {"name": "test", "version": None},
        "resource": {"service.name": "svc"},
    }


def test_run_folders_are_unique_under_concurrency(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: create_run_dir(tmp_path, "same"), range(64)))
    assert len(set(folders)) == 64
    assert all(f.is_dir() and f.name.startswith("same-") for f in folders)


def test_journal_streams_and_a_killed_process_leaves_a_recoverable_record(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "killed"))
    base = 1_795_000_000_000_000_000
    store.add_spans(
        [
            _span(
                "00000000000000b1",
                "00000000000000a1",
                base + 10,
                base + 20,
                **{"ml.activity": "step_block", "ml.step.first": 0, "ml.step.loss": [0.5, 0.25]},
            )
        ]
    )
    store.add_spans(
        [
            _span(
                "00000000000000e1",
                "00000000000000a1",
                base + 5,
                base + 30,
                **{"ml.activity": "epoch", "ml.context": "training"},
            )
        ]
    )
    journal = store.dir / JOURNAL
    lines = journal.read_text().splitlines()
    assert len(lines) == 4  # resource, series, block, epoch: on disk as they arrive
    # The process dies here: the run span never ended, nothing was finalised.
    document = build_document(store.dir)
    doc = assert_valid(document)
    placeholder = doc["activity"]["run:span_00000000000000a1"]
    assert placeholder["provtel:placeholder"] is True
    (metric,) = [e for e in doc["entity"].values() if e["prov:type"] == "provml:Metric"]
    assert metric["provtel:count"] == 2 and metric["provtel:last"] == 0.25


def test_series_are_float64_lossless_through_pandas(tmp_path: Path) -> None:
    rng = random.Random(7)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300) for _ in range(2000)]
    values += [5e-324, -0.0, 1.7976931348623157e308, 0.1 + 0.2, math.pi]
    store = RunStore(create_run_dir(tmp_path, "precise"))
    store.add_spans(
        [
            _span(
                "00000000000000c1",
                None,
                1,
                2,
                **{
                    "ml.activity": "step_block",
                    "ml.step.first": 10,
                    "ml.step.loss": values,
                    "ml.step.start_time": list(range(len(values))),
                },
            )
        ]
    )
    document = store.finalize()
    doc = assert_valid(document)
    (metric,) = [e for e in doc["entity"].values() if e["prov:type"] == "provml:Metric"]
    frame = pd.read_csv(document.parent / metric["dcterms:identifier"])
    assert frame["value"].dtype == "float64"
    assert frame["value"].tolist() == values
    assert frame["step"].tolist() == list(range(10, 10 + len(values)))


def test_metrics_and_spans_share_one_run(tmp_path: Path) -> None:
    resource = Resource.create({"service.name": "metered"})
    span_exporter = ProvSpanExporter(output_dir=tmp_path)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    reader = PeriodicExportingMetricReader(
        ProvMetricExporter(output_dir=tmp_path), export_interval_millis=60_000
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("bench")
    histogram = meter.create_histogram("ml.step.duration", unit="s")
    counter = meter.create_counter("ml.steps")
    with tracer_provider.get_tracer("t").start_as_current_span(
        "run", attributes={"ml.activity": "run"}
    ):
        for i in range(5):
            histogram.record(0.01 * (i + 1), {"ml.context": "training"})
            counter.add(1)
        reader.force_flush()
        counter.add(1)
    meter_provider.shutdown()  # the SDK's order at exit: metrics first, then spans
    assert not list(tmp_path.glob("*/prov.json"))  # not before the last exporter shut down
    tracer_provider.shutdown()
    (document,) = tmp_path.glob("*/prov.json")
    doc = assert_valid(document)
    metrics = {
        e["prov:label"]: e for e in doc["entity"].values() if e["prov:type"] == "provml:Metric"
    }
    assert set(metrics) == {"ml.step.duration", "ml.steps"}
    steps = pd.read_csv(document.parent / metrics["ml.steps"]["dcterms:identifier"])
    assert steps["value"].tolist() == [5, 6]  # cumulative, every collection kept
    durations = pd.read_csv(document.parent / metrics["ml.step.duration"]["dcterms:identifier"])
    assert durations["count"].tolist() == [5, 5]
    assert metrics["ml.step.duration"]["yprov:context"] == "training"
    (run,) = doc["activity"]
    generated = {g["prov:entity"]: g["prov:activity"] for g in doc["wasGeneratedBy"].values()}
    assert all(
        generated[k] == run for k, e in doc["entity"].items() if e["prov:type"] == "provml:Metric"
    )


def test_other_formats_on_request(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_FORMATS", "json,provn,xml,turtle,jsonld")
    exporter = ProvSpanExporter(output_dir=tmp_path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("run", attributes={"ml.hparam.lr": 0.5}):
        pass
    provider.shutdown()
    (document,) = tmp_path.glob("*/prov.json")
    reference = prov.read(str(document), format="json")
    for suffix, fmt in ((".provn", "provn"), (".xml", "xml"), (".jsonld", "jsonld")):
        assert prov.read(str(document.with_suffix(suffix)), format=fmt) == reference
    assert document.with_suffix(".ttl").stat().st_size > 0


def test_unknown_format_is_reported_and_json_still_written(
    tmp_path: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
    caplog,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_FORMATS", "json,docx")
    exporter = ProvSpanExporter(output_dir=tmp_path)
    assert "docx" in caplog.text
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("t").start_span("run").end()
    provider.shutdown()
    (document,) = tmp_path.glob("*/prov.json")
    assert_valid(document)


def test_a_forked_child_writes_nothing(tmp_path: Path) -> None:
    exporter = ProvSpanExporter(output_dir=tmp_path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    tracer.start_span("parent work").end()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker, say: its spans must not land in the parent's run
        tracer.start_span("child work").end()
        os._exit(0)
    os.waitpid(pid, 0)
    provider.shutdown()
    (document,) = tmp_path.glob("*/prov.json")
    labels = [a["prov:label"] for a in json.loads(document.read_text())["activity"].values()]
    assert labels == ["parent work"]
