"""A user runs a script under opentelemetry-instrument with nothing configured."""

from __future__ import annotations

import csv
import http.server
import json
import threading
from pathlib import Path
from typing import ClassVar

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, run_documents, run_instrumented

SCRIPT = """
import json, os, sys
from opentelemetry import metrics, trace

tracer = trace.get_tracer("user.train")
steps = metrics.get_meter("user.train").create_counter("ml.steps", unit="{step}")
spans = []
losses = [0.9, 0.5, 0.25, 0.125]
with tracer.start_as_current_span("train", attributes={
        "ml.activity": "run", "ml.hparam.lr": 0.01, "ml.hparam.optimizer": "SGD",
        "ml.model.class": "Net", "ml.model.parameters": 1234}) as run:
    spans.append(run)
    for epoch in range(2):
        with tracer.start_as_current_span(f"epoch {epoch}", attributes={
                "ml.activity": "epoch", "ml.context": "training", "ml.epoch": epoch,
                "ml.dataset.name": "toy", "ml.dataset.size": 64,
                "ml.dataloader.batch_size": 32}) as ep:
            spans.append(ep)
            with tracer.start_as_current_span("steps", attributes={
                    "ml.activity": "step_block", "ml.context": "training", "ml.epoch": epoch,
                    "ml.step.first": 2 * epoch, "ml.step.count": 2,
                    "ml.step.loss": losses[2 * epoch: 2 * epoch + 2],
                    "ml.step.start_time": [1795576776000000000 + i for i in range(2)]}) as blk:
                spans.append(blk)
                steps.add(2, {"ml.context": "training"})
            with tracer.start_as_current_span("save", attributes={
                    "ml.activity": "checkpoint", "ml.checkpoint.operation": "save",
                    "file.path": f"ckpt_{epoch}.pt", "file.size": 100}) as ck:
                spans.append(ck)
        with tracer.start_as_current_span("validate", attributes={
                "ml.activity": "evaluation", "ml.context": "validation",
                "ml.epoch": epoch}) as ev:
            spans.append(ev)
json.dump({"spans": [format(s.get_span_context().span_id, "016x") for s in spans],
           "exporters": os.environ.get("OTEL_TRACES_EXPORTER")}, open("seen.json", "w"))
"""


def test_plain_run_leaves_a_valid_document(tmp_path: Path, write_script) -> None:  # type: ignore[no-untyped-def]
    script = write_script("train.py", SCRIPT)
    result = run_instrumented(script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # nothing configured, nothing to complain about: stderr holds only the end-of-run summary
    (document,) = (tmp_path / "prov").glob("*/prov.json")
    summary = result.stderr.splitlines()
    assert summary[0] == f"provtel: {document.parent}", result.stderr
    assert all(line.startswith("  ") for line in summary[1:]), result.stderr

    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["exporters"] == "prov"  # no OTLP without an endpoint: no exit delay
    (document,) = run_documents(tmp_path / "prov")
    assert document.parent.name.startswith("train-")
    doc = assert_valid(document)

    activities = doc["activity"]
    by_span = {a["otel:span_id"]: key for key, a in activities.items()}
    assert set(by_span) == set(seen["spans"])  # one activity per span, nothing else
    informed = {(r["prov:informed"], r["prov:informant"]) for r in doc["wasInformedBy"].values()}
    for key, a in activities.items():
        if "otel:parent_span_id" in a:
            assert (key, by_span[a["otel:parent_span_id"]]) in informed
    kinds = sorted(a.get("prov:type", "") for a in activities.values())
    assert kinds.count("provtel:Epoch") == 2 and kinds.count("provtel:Evaluation") == 2

    agents = doc["agent"]
    software = [a for a in agents.values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    assert [a["otel:service.name"] for a in software] == ["train"]
    assert any(a["prov:type"]["$"] == "prov:Person" for a in agents.values())
    # the run is associated with the software agent and with the user, both with the plan
    assocs = {
        agents[a["prov:agent"]]["prov:type"]["$"]: a for a in doc["wasAssociatedWith"].values()
    }
    assert sorted(assocs) == ["prov:Person", "prov:SoftwareAgent"]
    assoc = assocs["prov:SoftwareAgent"]
    assert activities[assoc["prov:activity"]]["prov:label"] == "train"
    assert doc["entity"][assoc["prov:plan"]]["provml:lr"] == 0.01
    assert assocs["prov:Person"]["prov:activity"] == assoc["prov:activity"]

    entities = doc["entity"]
    hparams = {
        e["prov:label"]: e["prov:value"]
        for e in entities.values()
        if e["prov:type"] == "provml:HyperParameter"
    }
    assert hparams == {"lr": 0.01, "optimizer": "SGD"}
    datasets = [e for e in entities.values() if e["prov:type"] == "provml:Dataset"]
    assert [d["prov:label"] for d in datasets] == ["toy"]
    checkpoints = {
        k for k, e in entities.items() if e.get("dcterms:identifier", "").endswith(".pt")
    }
    assert len(checkpoints) == 2
    (derivation,) = doc["wasDerivedFrom"].values()
    assert {derivation["prov:generatedEntity"], derivation["prov:usedEntity"]} == checkpoints

    metrics = [e for e in entities.values() if e["prov:type"] == "provml:Metric"]
    assert metrics, "the loss series is referenced from the document"
    for metric in metrics:
        assert (document.parent / metric["dcterms:identifier"]).is_file()
    (loss,) = [m for m in metrics if m["prov:label"] == "loss"]
    assert loss["yprov:context"] == "training"
    with open(document.parent / loss["dcterms:identifier"]) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["value"]) for r in rows] == [0.9, 0.5, 0.25, 0.125]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert loss["provtel:count"] == 4 and loss["provtel:last"] == 0.125
    (counted,) = [m for m in metrics if m["prov:label"] == "ml.steps"]
    assert counted["provtel:last"] == 4 and counted["otel:unit"] == "{step}"
    assert not (document.parent / "journal.jsonl").exists()


class _Collector(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_otlp_is_added_when_an_endpoint_is_set(tmp_path: Path, write_script) -> None:  # type: ignore[no-untyped-def]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        script = write_script("job.py", SCRIPT)
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        )
        result = run_instrumented(script, cwd=tmp_path, env=env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "seen.json").read_text())["exporters"] == "prov,otlp"
    assert "/v1/traces" in _Collector.paths and "/v1/metrics" in _Collector.paths
    (document,) = run_documents(tmp_path / "prov")
    assert_valid(document)


def test_exporters_by_name_next_to_other_exporters(tmp_path: Path, write_script) -> None:  # type: ignore[no-untyped-def]
    script = write_script("named.py", SCRIPT)
    env = clean_env(
        OTEL_TRACES_EXPORTER="console,prov",
        OTEL_METRICS_EXPORTER="prov",
        OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(tmp_path / "out"),
        OTEL_PYTHON_PROVTEL_RUN_NAME="named-run",
    )
    result = run_instrumented(script, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert '"name": "train"' in result.stdout  # the console exporter ran too
    (document,) = run_documents(tmp_path / "out")
    assert document.parent.name.startswith("named-run-")
    assert_valid(document)


def test_unwritable_output_dir_gives_one_error_line(tmp_path: Path, write_script) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should be")
    script = write_script("train.py", SCRIPT + "\nprint('finished')\n")
    env = clean_env(OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(blocker / "prov"))
    result = run_instrumented(script, cwd=tmp_path, env=env)
    assert result.returncode == 0
    assert result.stdout == "finished\n"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "provtel" in lines[0] and str(blocker) in lines[0]
