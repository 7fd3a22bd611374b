"""Secrets on the command line and in a git remote never reach a file or an OTLP receiver."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provtel.exporter.prov.validate import assert_valid
from provtel.semconv.redaction import REDACTED
from tests.support import clean_env, run_documents, run_instrumented

SCRIPT = Path(__file__).parent / "scripts" / "secret_args.py"
API_KEY = "sk-live-XYZ"
PASSWORD = "hunter2"
REMOTE = "https://oauth2:glpat-AB12@CDxyz789@gitlab.com/team/x.git"
ENTITY = "acme-private-team"  # secret because the user says so (OTEL_PYTHON_PROVTEL_REDACT)
SECRETS = (API_KEY, PASSWORD, "glpat-AB12", "CDxyz789", ENTITY)


def _repository(folder: Path) -> Path:
    """A git checkout of the script whose remote carries a token."""
    folder.mkdir()
    script = folder / "train.py"
    shutil.copy(SCRIPT, script)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "train.py"], ["commit", "-q", "-m", "x"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    subprocess.run([*git, "remote", "add", "origin", REMOTE], check=True, capture_output=True)
    return script


@contextmanager
def _otlp_receiver() -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP endpoint on loopback that keeps every request body it is sent."""
    received: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def _leaks(root: Path) -> list[str]:
    """Every file under ``root`` that holds one of the secrets (raw bytes)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    return found


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    script = _repository(tmp_path / "repo")
    with _otlp_receiver() as (port, received):
        env = clean_env(
            OTEL_TRACES_EXPORTER="prov,otlp",
            OTEL_METRICS_EXPORTER="prov,otlp",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_PYTHON_PROVTEL_REDACT="*dsn*, WANDB_*",
        )
        args = (f"--api-key={API_KEY}", "--db-password", PASSWORD, "--lr", "0.1")
        args += ("--wandb-entity", ENTITY)
        result = run_instrumented(script, *args, cwd=script.parent, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    # Not one byte of a secret in the run folder, nor in anything sent over OTLP.
    assert _leaks(script.parent / "prov") == []
    traces = [body for path, body in received if path == "/v1/traces"]
    assert traces and {path for path, _ in received} == {"/v1/traces", "/v1/metrics"}
    assert [s for _, body in received for s in SECRETS if s.encode() in body] == []
    sent = {}
    for body in traces:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for kv in resource_spans.resource.attributes:
                if kv.key == "process.command_args":
                    sent["resource"] = [v.string_value for v in kv.value.array_value.values]
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    for kv in span.attributes:
                        if kv.key == "ml.hparam.api_key":
                            sent["hparam"] = kv.value.string_value
    expected_args = ["--api-key=" + REDACTED, "--db-password", REDACTED, "--lr", "0.1"]
    expected_args += ["--wandb-entity", REDACTED]
    assert sent["resource"][1:] == expected_args
    assert sent["hparam"] == REDACTED

    (document,) = run_documents(script.parent / "prov")
    doc = assert_valid(document)
    (run,) = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:Run"]
    (agent,) = [a for a in doc["agent"].values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    for record in (run, agent):
        command = json.loads(record["otel:process.command_args"])  # a list, as JSON text
        assert command[1:] == expected_args
    assert run["otel:vcs.repository.url.full"] == "https://gitlab.com/team/x.git"
    hparams = {
        e["prov:label"]: e["prov:value"]
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:HyperParameter"
    }
    assert hparams["api_key"] == hparams["db_password"] == hparams["wandb_entity"] == REDACTED
    assert hparams["lr"] == 0.1
    (plan,) = [
        e
        for e in doc["entity"].values()
        if e["prov:type"] == {"$": "prov:Plan", "type": "xsd:QName"}
    ]
    assert plan["provml:api_key"] == plan["provml:db_password"] == REDACTED
    # the configuration saved inside the checkpoint
    (saved,) = [e for e in doc["entity"].values() if e.get("prov:label") == "checkpoint.pt"]
    assert saved["otel:ml.checkpoint.entry.config.hub_token"] == REDACTED
    assert saved["otel:ml.checkpoint.entry.config.db_password"] == REDACTED
    assert saved["otel:ml.checkpoint.entry.config.lr"] == 0.1
