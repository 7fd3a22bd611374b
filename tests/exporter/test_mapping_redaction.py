"""Spans from a sender that did not redact (another SDK, a hand-made span) are redacted in PROV."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from provtel.exporter.prov.otlp import to_json
from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.receiver.convert import convert_files
from provtel.semconv.redaction import REDACTED
from tests.receiver.helpers import resource, trace_request

SECRETS = ("sk-live-XYZ", "hunter2", "glpat-AB12", "CDxyz789", "t0k3n")


def test_unredacted_spans_are_redacted_in_the_document(tmp_path: Path) -> None:
    argv = ["train.py", "--api-key=sk-live-XYZ", "--db-password", "hunter2"]
    res = resource(**{"process.command_args": argv, "process.command_line": " ".join(argv)})
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=res)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    attributes = {
        "ml.activity": "run",
        "ml.hparam.api_key": "sk-live-XYZ",
        "ml.hparam.data_url": "https://host/d.csv?access_token=t0k3n",
        "ml.hparam.lr": 0.01,
        "process.command_args": argv,
        "vcs.repository.url.full": "https://oauth2:glpat-AB12@CDxyz789@gitlab.com/x.git",
    }
    provider.get_tracer("user").start_span("train", attributes=attributes).end()
    provider.shutdown()
    source = tmp_path / "otlp.jsonl"
    source.write_text(to_json(trace_request(list(memory.get_finished_spans()))) + "\n")

    (document,) = convert_files([source], tmp_path / "out").documents
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [s for s in SECRETS if s.encode() in written] == []
    doc = assert_valid(document)
    (run,) = doc["activity"].values()
    assert json.loads(run["otel:process.command_args"])[1:] == [
        "--api-key=" + REDACTED,
        "--db-password",
        REDACTED,
    ]
    assert run["otel:vcs.repository.url.full"] == "https://gitlab.com/x.git"
    (agent,) = [a for a in doc["agent"].values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    assert (
        agent["otel:process.command_line"]
        == f"train.py --api-key={REDACTED} --db-password {REDACTED}"
    )
    hparams = {
        e["prov:label"]: e["prov:value"]
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:HyperParameter"
    }
    assert hparams == {"api_key": REDACTED, "data_url": "https://host/d.csv", "lr": 0.01}
