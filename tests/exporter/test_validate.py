"""The PROV validation pipeline: a valid document passes, each injected fault is named."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.validate import (
    assert_valid,
    check_file,
    lint,
    schema_problems,
    validate_document,
    validate_file,
)

T = "2026-11-02T10:"  # every time below is on this day and hour, UTC


def _qname(value: str) -> dict[str, str]:
    return {"$": value, "type": "xsd:QName"}


def _event(entity: str, activity: str, minute_second: str) -> dict[str, str]:
    """A usage or generation record at 10:{minute_second} UTC."""
    return {"prov:entity": entity, "prov:activity": activity, "prov:time": f"{T}{minute_second}Z"}


def _valid() -> dict[str, Any]:
    """reference/prov.md §4.4 with absolute namespaces, plus a wasEndedBy and a NaN value."""
    return {
        "prefix": {
            "run": "https://provtel.org/ns/run/4bf92f3577b34da6a3ce929d0e0e4736/",
            "otel": "https://provtel.org/ns/otel#",
            "provml": "https://provtel.org/ns/provml#",
            "yprov": "https://github.com/HPCI-Lab/yProv4ML#",
            "dcterms": "http://purl.org/dc/terms/",
        },
        "agent": {
            "run:svc": {
                "prov:type": _qname("prov:SoftwareAgent"),
                "prov:label": "trainer 0.3.1",
                "otel:service.name": "trainer",
                "otel:host.name": "node07",
            },
            "run:alice": {"prov:type": _qname("prov:Person")},
        },
        "activity": {
            "run:span_a1": {
                "prov:startTime": f"{T}00:00.000000Z",
                "prov:endTime": f"{T}02:10.500000Z",
                "prov:label": "train",
                "otel:span_id": "a1b2c3d4e5f60718",
                "otel:trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "yprov:context": "mnist_exp",
            },
            "run:span_e1": {
                "prov:startTime": f"{T}00:01.000000Z",
                "prov:endTime": f"{T}01:00.000000Z",
                "prov:label": "epoch 1",
                "otel:span_id": "b1b2c3d4e5f60718",
                "otel:parent_span_id": "a1b2c3d4e5f60718",
                "yprov:context": "TRAINING",
                "provml:epoch": 1,
            },
            "run:span_e2": {
                "prov:startTime": f"{T}01:00.100000Z",
                "prov:endTime": f"{T}02:00.000000Z",
                "prov:label": "epoch 2",
                "otel:span_id": "c1b2c3d4e5f60718",
                "otel:parent_span_id": "a1b2c3d4e5f60718",
                "yprov:context": "TRAINING",
                "provml:epoch": 2,
            },
        },
        "entity": {
            "run:config": {
                "prov:type": _qname("prov:Plan"),
                "provml:lr": 0.001,
                "provml:batch_size": 64,
            },
            "run:mnist_train": {
                "prov:type": "provml:Dataset",
                "dcterms:identifier": "file:data/mnist/train",
            },
            "run:model": {"prov:type": "provml:Model", "prov:label": "cnn"},
            "run:ckpt_0": {"prov:type": "provml:Model", "dcterms:identifier": "ckpt/cnn_0.pt"},
            "run:ckpt_1": {"prov:type": "provml:Model", "dcterms:identifier": "ckpt/cnn_1.pt"},
            "run:ckpt_2": {"prov:type": "provml:Model", "dcterms:identifier": "ckpt/cnn_2.pt"},
            "run:loss_TRAINING": {
                "prov:type": "provml:Metric",
                "prov:label": "loss",
                "yprov:context": "TRAINING",
                "yprov:source": "otel.metrics",
                "dcterms:identifier": "metrics/loss_TRAINING.csv",
                "otel:unit": "1",
                "otel:count": 1876,
                "otel:last": 0.081,
                # A diverged loss: prov reads it as float("nan"), and nan != nan.
                "otel:max": {"$": "NaN", "type": "xsd:double"},
            },
            "run:val_acc_e1": {
                "prov:type": "provml:Metric",
                "prov:label": "val_acc",
                "yprov:context": "VALIDATION",
                "prov:value": 0.962,
                "provml:epoch": 1,
            },
            "run:val_acc_e2": {
                "prov:type": "provml:Metric",
                "prov:label": "val_acc",
                "yprov:context": "VALIDATION",
                "prov:value": 0.978,
                "provml:epoch": 2,
            },
        },
        "wasAssociatedWith": {
            "_:as1": {
                "prov:activity": "run:span_a1",
                "prov:agent": "run:svc",
                "prov:plan": "run:config",
            }
        },
        "actedOnBehalfOf": {"_:d1": {"prov:delegate": "run:svc", "prov:responsible": "run:alice"}},
        "wasInformedBy": {
            "_:i1": {"prov:informed": "run:span_e1", "prov:informant": "run:span_a1"},
            "_:i2": {"prov:informed": "run:span_e2", "prov:informant": "run:span_a1"},
        },
        "used": {
            "_:u1": _event("run:mnist_train", "run:span_e1", "00:01.000000"),
            "_:u2": _event("run:ckpt_0", "run:span_e1", "00:01.000000"),
            "_:u3": _event("run:mnist_train", "run:span_e2", "01:00.100000"),
            "_:u4": _event("run:ckpt_1", "run:span_e2", "01:00.100000"),
        },
        "wasGeneratedBy": {
            "_:g1": _event("run:ckpt_1", "run:span_e1", "00:59.000000"),
            "_:g2": _event("run:val_acc_e1", "run:span_e1", "00:59.900000"),
            "_:g3": _event("run:ckpt_2", "run:span_e2", "01:59.000000"),
            "_:g4": _event("run:val_acc_e2", "run:span_e2", "01:59.900000"),
            "_:g5": _event("run:loss_TRAINING", "run:span_a1", "02:10.000000"),
        },
        "wasEndedBy": {"_:e1": {"prov:activity": "run:span_e2", "prov:time": f"{T}02:00.000000Z"}},
        "wasDerivedFrom": {
            "_:r1": {
                "prov:generatedEntity": "run:ckpt_1",
                "prov:usedEntity": "run:ckpt_0",
                "prov:activity": "run:span_e1",
                "prov:type": _qname("prov:Revision"),
            },
            "_:r2": {
                "prov:generatedEntity": "run:ckpt_2",
                "prov:usedEntity": "run:ckpt_1",
                "prov:activity": "run:span_e2",
                "prov:type": _qname("prov:Revision"),
            },
        },
        "specializationOf": {
            "_:s1": {"prov:specificEntity": "run:ckpt_1", "prov:generalEntity": "run:model"},
            "_:s2": {"prov:specificEntity": "run:ckpt_2", "prov:generalEntity": "run:model"},
        },
    }


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


# -- the valid document -------------------------------------------------------------------------


def test_valid_document_passes_the_whole_pipeline(tmp_path: Path) -> None:
    path = _write(tmp_path / "prov.json", _valid())
    report = check_file(path)
    assert report.problems == []
    assert report.notes == []
    # every step ran, the round trips included
    for step in ("json", "schema", "lint", "prov", "round trip PROV-N", "round trip PROV-O"):
        assert step in report.timings
    assert "round trip PROV-XML" in report.timings
    assert "round trip PROV-JSON-LD" in report.timings
    assert assert_valid(path) == _valid()
    assert validate_document(_valid()) == []
    assert lint(_valid()) == []


def test_lint_does_not_modify_the_document() -> None:
    doc = _valid()
    lint(doc)
    assert doc == _valid()


def test_patched_schema_accepts_wasEndedBy() -> None:
    doc = _valid()
    assert "wasEndedBy" in doc
    assert schema_problems(doc) == []
    # ... which the official schema, as shipped, rejects (its key is spelt "wasEndedby")
    from importlib.resources import files

    import jsonschema

    raw = json.loads((files("prov") / "tests/schemas/prov-json.schema.json").read_text("utf-8"))
    assert not jsonschema.Draft4Validator(raw).is_valid(doc)


# -- injected faults ----------------------------------------------------------------------------


def _undeclared(d: dict[str, Any]) -> None:
    d["used"]["_:u1"]["prov:entity"] = "run:nowhere"


def _relative_namespace(d: dict[str, Any]) -> None:
    d["prefix"]["provml"] = "prov-ml"


def _space_in_local_name(d: dict[str, Any]) -> None:
    d["entity"]["run:my model"] = d["entity"].pop("run:model")
    for spec in d["specializationOf"].values():
        spec["prov:generalEntity"] = "run:my model"


def _end_before_start(d: dict[str, Any]) -> None:
    d["activity"]["run:span_a1"]["prov:endTime"] = "2026-11-02T09:00:00.000000Z"


def _generation_outside_activity(d: dict[str, Any]) -> None:
    d["wasGeneratedBy"]["_:g2"]["prov:time"] = f"{T}01:30.000000Z"


def _generated_twice(d: dict[str, Any]) -> None:
    d["wasGeneratedBy"]["_:g6"] = {
        "prov:entity": "run:ckpt_1",
        "prov:activity": "run:span_e2",
        "prov:time": f"{T}01:10.000000Z",
    }


def _derivation_order(d: dict[str, Any]) -> None:
    # ckpt_1 (generated 10:00:59) derived from ckpt_2 (generated 10:01:59)
    d["wasDerivedFrom"]["_:r3"] = {
        "prov:generatedEntity": "run:ckpt_1",
        "prov:usedEntity": "run:ckpt_2",
    }


def _entity_and_activity(d: dict[str, Any]) -> None:
    d["activity"]["run:model"] = {"prov:startTime": f"{T}00:00.000000Z"}


def _non_utc(d: dict[str, Any]) -> None:
    d["activity"]["run:span_e1"]["prov:startTime"] = "2026-11-02T11:00:01.000000+01:00"


def _naive_time(d: dict[str, Any]) -> None:
    d["used"]["_:u1"]["prov:time"] = f"{T}00:01.000000"


def _list_value(d: dict[str, Any]) -> None:
    d["entity"]["run:loss_TRAINING"]["otel:values"] = [0.3, 0.1, 0.2, 0.2]


def _schema_violation(d: dict[str, Any]) -> None:
    d["entity"]["run:config"]["provml:lr"] = {"$": 0.001, "type": "xsd:double"}


def _label_not_string(d: dict[str, Any]) -> None:
    d["activity"]["run:span_a1"]["prov:label"] = {"$": "train", "lang": "en"}


def _used_before_generated(d: dict[str, Any]) -> None:
    d["used"]["_:u5"] = {
        "prov:activity": "run:span_e1",
        "prov:entity": "run:ckpt_2",
        "prov:time": f"{T}00:30.000000Z",
    }


def _undeclared_prefix(d: dict[str, Any]) -> None:
    d["entity"]["run:model"]["mlflow:run_id"] = "abc"


def _several_records_under_one_id(d: dict[str, Any]) -> None:
    d["entity"]["run:model"] = [{"prov:label": "cnn"}, {"prov:label": "cnn v2"}]


def _duplicate_span_id(d: dict[str, Any]) -> None:
    # two epochs drew the same span id (a script re-seeded ``random`` before each)
    d["activity"]["run:span_e2"]["otel:span_id"] = "b1b2c3d4e5f60718"


def _activity_cycle(d: dict[str, Any]) -> None:
    # the run's parent is its own epoch: no activity of the tree is its root
    d["activity"]["run:span_a1"]["otel:parent_span_id"] = "b1b2c3d4e5f60718"
    d["wasInformedBy"]["_:i3"] = {"prov:informed": "run:span_a1", "prov:informant": "run:span_e1"}


FAULTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "undeclared reference": (_undeclared, "run:nowhere is not declared"),
    "relative namespace": (_relative_namespace, "'prov-ml' is not an absolute IRI"),
    "local name with a space": (_space_in_local_name, "local name 'my model'"),
    "end before start": (_end_before_start, "is before prov:startTime"),
    "generation outside activity": (_generation_outside_activity, "_:g2: prov:time"),
    "entity generated twice": (_generated_twice, "run:ckpt_1 is generated 2 times"),
    "derivation ordering": (_derivation_order, "derivation-generation-generation ordering"),
    "entity and activity": (_entity_and_activity, "run:model is both an entity and an activity"),
    "non-UTC time": (_non_utc, "is not a UTC time"),
    "time without timezone": (_naive_time, "is not a UTC time"),
    "list value": (_list_value, "otel:values is a JSON array"),
    "schema violation": (_schema_violation, "PROV-JSON schema"),
    "label not a string": (_label_not_string, "prov:label"),
    "usage before generation": (_used_before_generated, "generation-precedes-usage"),
    "undeclared prefix": (_undeclared_prefix, "prefix 'mlflow' of 'mlflow:run_id' is not declared"),
    "several records under one id": (_several_records_under_one_id, "several records"),
    "duplicate span id": (
        _duplicate_span_id,
        "span id b1b2c3d4e5f60718 is used by 2 activities (run:span_e1, run:span_e2)",
    ),
    "activity cycle": (
        _activity_cycle,
        "activities run:span_a1 -> run:span_e1 -> run:span_a1 form a cycle of wasInformedBy",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_injected_fault_is_named(fault: str) -> None:
    inject, expected = FAULTS[fault]
    doc = copy.deepcopy(_valid())
    inject(doc)
    problems = validate_document(doc)
    assert any(expected in p for p in problems), problems


def test_generation_outside_activity_names_the_interval() -> None:
    doc = _valid()
    _generation_outside_activity(doc)
    (problem,) = [p for p in lint(doc) if "_:g2" in p]
    assert "outside activity run:span_e1's interval" in problem


def test_unparseable_json_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "prov.json"
    path.write_text('{"prefix": {', encoding="utf-8")
    (problem,) = validate_file(path)
    assert problem.startswith("not valid JSON")
    path.write_text("[1, 2]", encoding="utf-8")
    assert validate_file(path) == ["not a PROV-JSON document: the top level is a JSON list"]
    path.write_text('{"entity": {"ex:a": {"ex:v": NaN}}}', encoding="utf-8")
    assert "NaN" in validate_file(path)[0]
    path.write_bytes(b"\xff\xfe{")
    assert validate_file(path)[0].startswith("not valid JSON")


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    text = json.dumps(_valid())
    text = text.replace(
        '"run:ckpt_0": {', '"run:ckpt_1": {"prov:label": "dup"}, "run:ckpt_0": {', 1
    )
    path = tmp_path / "prov.json"
    path.write_text(text, encoding="utf-8")
    assert any("duplicate key 'run:ckpt_1'" in p for p in validate_file(path, round_trips=False))


def test_prov_unification_failure_is_a_problem() -> None:
    doc = _valid()
    _entity_and_activity(doc)
    assert any("unified()" in p for p in validate_document(doc))


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        validate_file(tmp_path / "absent.json")


def test_assert_valid_lists_the_problems(tmp_path: Path) -> None:
    doc = _valid()
    _undeclared(doc)
    with pytest.raises(AssertionError, match=r"run:nowhere is not declared"):
        assert_valid(_write(tmp_path / "prov.json", doc))


def test_big_files_skip_prov_but_keep_schema_and_lint(tmp_path: Path) -> None:
    doc = _valid()
    _end_before_start(doc)
    path = _write(tmp_path / "prov.json", doc)
    report = check_file(path, big_file_bytes=100)
    assert "prov" not in report.timings
    assert any("skipped the prov parse" in n for n in report.notes)
    assert any("is before prov:startTime" in p for p in report.problems)


def test_quick_mode_skips_round_trips(tmp_path: Path) -> None:
    report = check_file(_write(tmp_path / "prov.json", _valid()), round_trips=False)
    assert report.problems == []
    assert "prov" in report.timings
    assert not any(k.startswith("round trip") for k in report.timings)


def test_round_trips_skipped_above_their_own_limit(tmp_path: Path) -> None:
    report = check_file(_write(tmp_path / "prov.json", _valid()), round_trip_max_bytes=100)
    assert report.problems == []
    assert "prov" in report.timings
    assert not any(k.startswith("round trip") for k in report.timings)
    assert any("skipped the round trips" in n for n in report.notes)


def _prov_document(doc: dict[str, Any]) -> Any:
    from prov.model import ProvDocument

    return ProvDocument.deserialize(content=json.dumps(doc), format="json")


def test_nan_equal_to_itself_but_real_changes_still_reported() -> None:
    from provtel.exporter.prov.validate import _compare

    original = _prov_document(_valid())
    again = _prov_document(_valid())
    assert original != again  # prov compares float("nan") with ==, see validate._same
    assert _compare("PROV-JSON", original, again) == []
    changed = _valid()
    changed["entity"]["run:model"]["prov:label"] = "rnn"
    (problem,) = _compare("PROV-JSON", original, _prov_document(changed))
    assert "lost Entity run:model" in problem
    assert "gained Entity run:model" in problem


def test_xml_and_jsonld_schemas_reject_bad_output() -> None:
    from lxml import etree

    from provtel.exporter.prov.validate import _jsonld_validator, _xml_schema

    document = _prov_document(_valid())
    xml = etree.fromstring(document.serialize(format="xml").encode())
    assert _xml_schema().validate(xml)
    etree.SubElement(xml, "{http://www.w3.org/ns/prov#}bogus")
    assert not _xml_schema().validate(xml)

    import fastjsonschema

    validator = _jsonld_validator()
    assert validator is not None
    jsonld = json.loads(document.serialize(format="jsonld"))
    validator(jsonld)  # no RecursionError: the definition rename works
    jsonld["@graph"][0]["@type"] = "Bogus"
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validator(jsonld)


# -- the CLI ------------------------------------------------------------------------------------


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_exit_codes(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.json", _valid())
    bad_doc = _valid()
    _undeclared(bad_doc)
    bad = _write(tmp_path / "bad.json", bad_doc)

    ok = _cli(good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{good}: valid" in ok.stdout

    failed = _cli("--quick", good, bad)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"{bad}: INVALID" in failed.stdout
    assert "run:nowhere is not declared" in failed.stdout

    missing = _cli("--quick", tmp_path / "absent.json", bad)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "no such PROV-JSON file" in missing.stderr

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    _write(run_dir / "prov.json", _valid())
    latest = _cli("--quick", "--latest", tmp_path / "runs")
    assert latest.returncode == 0, latest.stdout + latest.stderr


# -- a document from the real exporter ----------------------------------------------------------


def test_exporter_document_passes_the_whole_pipeline(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Link, Status, StatusCode
    from opentelemetry.util.types import AnyValue

    from provtel.exporter.prov import ProvMetricExporter, ProvSpanExporter

    resource = Resource.create(
        {"service.name": "trainer", "service.version": "0.1", "process.owner": "alice smith"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(ProvSpanExporter(output_dir=tmp_path)))
    reader = PeriodicExportingMetricReader(
        ProvMetricExporter(output_dir=tmp_path), export_interval_millis=3_600_000
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    energy = meters.get_meter("test").create_counter("gpu.energy", unit="J")
    tracer = provider.get_tracer("test.scope", "1.0")
    run_attributes: dict[str, AnyValue] = {
        "ml.activity": "run",
        "ml.hparam.lr": 0.1,
        "ml.hparam.layers": [64, 32],
        "ml.dataset.name": "mnist train",
        "ml.dataset.path": "data/mnist",
        "ml.model.class": "Net",
    }
    with tracer.start_as_current_span("train", attributes=run_attributes) as root:
        load: dict[str, AnyValue] = {"ml.activity": "checkpoint", "ml.checkpoint.operation": "load"}
        with tracer.start_as_current_span("load", attributes={**load, "file.path": "init.pt"}):
            pass
        for epoch in (0, 1):
            epoch_attributes: dict[str, AnyValue] = {
                "ml.activity": "epoch",
                "ml.epoch": epoch,
                "ml.context": "training",
            }
            with tracer.start_as_current_span(f"epoch {epoch}", attributes=epoch_attributes):
                block: dict[str, AnyValue] = {
                    "ml.activity": "step_block",
                    "ml.step.first": 3 * epoch,
                    "ml.step.loss": [0.5, 0.4, float("nan")],
                    "ml.epoch": epoch,
                }
                with tracer.start_as_current_span("steps", attributes=block) as span:
                    span.add_event("exception", {"exception.type": "ValueError"})
                energy.add(5, {"gpu": 0})
                save: dict[str, AnyValue] = {
                    "ml.activity": "checkpoint",
                    "ml.checkpoint.operation": "save",
                    "file.path": f"ckpt/model {epoch}.pt",
                }
                with tracer.start_as_current_span("save", attributes=save):
                    pass
            with tracer.start_as_current_span(
                "eval",
                links=[Link(root.get_span_context())],
                attributes={"ml.activity": "evaluation", "odd key!": "x"},
            ) as evaluation:
                evaluation.set_status(Status(StatusCode.ERROR, "diverged"))
    meters.shutdown()
    provider.shutdown()

    (path,) = tmp_path.glob("*/prov.json")
    doc = assert_valid(path)
    assert len(doc["activity"]) == 10
    assert any(e.get("prov:type") == "provml:Metric" for e in doc["entity"].values())
    assert "wasDerivedFrom" in doc
