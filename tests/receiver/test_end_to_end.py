"""The real thing: instrumented processes -> OTLP exporters -> ``provtel serve`` -> PROV.

Two ranks of one job (provtel's job detection gives them one trace), one exporting over gRPC and
one over HTTP, into ``provtel serve`` on loopback; the archive of what it acknowledged through
``provtel convert``; and a receiver killed and restarted in the middle of a run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.receiver.helpers import ServeProcess, documents, normalised, wait_for
from tests.support import INSTRUMENT, clean_env

pytestmark = pytest.mark.slow

RANK_SCRIPT = """
import json, os, pathlib, time
from opentelemetry import metrics, trace

rank = int(os.environ["RANK"])
tracer = trace.get_tracer("user.train", "1.0")
meter = metrics.get_meter("user.train", "1.0")
steps = meter.create_counter("ml.steps", unit="{step}")
loss = meter.create_gauge("ml.loss", unit="1")
pause = os.environ.get("PAUSE_AFTER_EPOCH_0")
spans = []
with tracer.start_as_current_span("train", attributes={
        "ml.activity": "run", "ml.hparam.lr": 0.01, "ml.hparam.batch_size": 32,
        "ml.model.class": "Net"}) as run:
    spans.append(run)
    for epoch in range(2):
        with tracer.start_as_current_span(f"epoch {epoch}", attributes={
                "ml.activity": "epoch", "ml.context": "training", "ml.epoch": epoch,
                "ml.dataset.name": "toy", "ml.dataset.size": 64}) as ep:
            spans.append(ep)
            with tracer.start_as_current_span("steps", attributes={
                    "ml.activity": "step_block", "ml.context": "training", "ml.epoch": epoch,
                    "ml.step.first": 2 * epoch, "ml.step.count": 2,
                    "ml.step.loss": [1.0 / (2 * epoch + 1 + rank), 1.0 / (2 * epoch + 2 + rank)],
                    "ml.step.start_time": [time.time_ns(), time.time_ns() + 1]}) as blk:
                spans.append(blk)
            steps.add(2, {"ml.context": "training"})
            loss.set(0.5 / (epoch + 1), {"ml.context": "training"})
            if rank == 0:
                with tracer.start_as_current_span("save", attributes={
                        "ml.activity": "checkpoint", "ml.checkpoint.operation": "save",
                        "file.path": f"ckpt_{epoch}.pt", "file.size": 100}) as ck:
                    spans.append(ck)
        if pause and epoch == 0:
            # Hand what exists so far to the receiver, then wait for the test's go-ahead.
            trace.get_tracer_provider().force_flush()
            metrics.get_meter_provider().force_flush()
            pathlib.Path(pause + ".flushed").write_text(json.dumps(
                [format(s.get_span_context().span_id, "016x") for s in spans[1:]]))
            while not pathlib.Path(pause + ".go").exists():
                time.sleep(0.05)
pathlib.Path(f"spans_{rank}.json").write_text(json.dumps(
    [format(s.get_span_context().span_id, "016x") for s in spans]))
"""


def rank_env(rank: int, protocol: str, port: int, **extra: str) -> dict[str, str]:
    """A rank of a torchrun job (2 ranks) exporting only over OTLP."""
    return clean_env(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_METRIC_EXPORT_INTERVAL="60000",  # only explicit flushes and the one at exit
        TORCHELASTIC_RUN_ID="e2e-job",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        **extra,
    )


def start_rank(script: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(INSTRUMENT), sys.executable, str(script)],
        cwd=script.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out


def activity_ids(doc: dict[str, Any]) -> set[str]:
    return {a["otel:span_id"] for a in doc["activity"].values() if "otel:span_id" in a}


def series(run_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((run_dir / "metrics").glob("*.csv"))}


def test_two_ranks_over_grpc_and_http_make_one_document_and_convert_agrees(
    tmp_path: Path, write_script: Any
) -> None:
    script = write_script("train.py", RANK_SCRIPT)
    archive = tmp_path / "otlp.jsonl"
    server = ServeProcess(tmp_path / "served", "--grace", "1", "--archive", str(archive))
    try:
        ranks = [
            start_rank(script, rank_env(0, "grpc", server.grpc_port)),
            start_rank(script, rank_env(1, "http/protobuf", server.http_port)),
        ]
        try:
            for proc in ranks:
                finish(proc)
        finally:
            for proc in ranks:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        (document,) = wait_for(lambda: documents(tmp_path / "served"), what="the run's document")
    finally:
        assert server.stop() == 0, server.log_text()

    # One run folder for the job, holding one valid document with both ranks.
    assert [p.name for p in (tmp_path / "served").iterdir()] == [document.parent.name]
    assert document.parent.name.startswith("train-")
    doc = assert_valid(document)
    sent = {s for r in (0, 1) for s in json.loads((tmp_path / f"spans_{r}.json").read_text())}
    assert activity_ids(doc) == sent
    assert len({a["otel:trace_id"] for a in doc["activity"].values()}) == 1
    agents = {
        key: a for key, a in doc["agent"].items() if a["prov:type"]["$"] == "prov:SoftwareAgent"
    }
    assert sorted(a["otel:ml.rank"] for a in agents.values()) == [0, 1]
    runs = [k for k, a in doc["activity"].items() if a.get("prov:type") == "provtel:Run"]
    associated = {
        r["prov:activity"]: r["prov:agent"]
        for r in doc["wasAssociatedWith"].values()
        if r["prov:agent"] in agents  # the software agent (the user is associated too)
    }
    assert {agents[associated[r]]["otel:ml.rank"] for r in runs} == {0, 1}
    # Each rank's metrics are attributed to that rank's agent.
    steps = [k for k, e in doc["entity"].items() if e["prov:label"].startswith("ml.steps")]
    attributed = {r["prov:entity"]: r["prov:agent"] for r in doc["wasAttributedTo"].values()}
    assert sorted(agents[attributed[s]]["otel:ml.rank"] for s in steps) == [0, 1]
    checkpoints = [
        e for e in doc["entity"].values() if str(e.get("dcterms:identifier", "")).endswith(".pt")
    ]
    assert len(checkpoints) == 2

    # The same telemetry, from the archive, through provtel convert: the same document.
    converted = subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "convert", str(archive),
         "--output", str(tmp_path / "converted")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    (again,) = documents(tmp_path / "converted")
    assert converted.stdout.strip() == str(again)
    assert_valid(again, round_trips=False)
    assert normalised(again) == normalised(document)
    assert series(again.parent) == series(document.parent)


def test_a_receiver_killed_mid_run_loses_nothing_it_acknowledged(
    tmp_path: Path, write_script: Any
) -> None:
    script = write_script("train.py", RANK_SCRIPT)
    output = tmp_path / "served"
    first = ServeProcess(output, "--grace", "1")
    ports = {"grpc_port": first.grpc_port, "http_port": first.http_port}
    pause = tmp_path / "pause"
    rank0 = start_rank(script, rank_env(0, "grpc", first.grpc_port, PAUSE_AFTER_EPOCH_0=str(pause)))
    rank1 = start_rank(script, rank_env(1, "http/protobuf", first.http_port))
    try:
        flushed = Path(str(pause) + ".flushed")
        wait_for(flushed.exists, timeout=60, what="rank 0's first epoch")
        acknowledged = set(json.loads(flushed.read_text()))
        finish(rank1)  # rank 1 runs to its end while rank 0 waits

        def journaled() -> set[str]:
            from provtel.exporter.prov import journal

            ids = set()
            for path in output.glob("*/journal.jsonl"):  # span lines and otlp_spans lines
                for rec in journal.read(path, [], kinds=(journal.SPAN,)):
                    ids.add(rec.data["span_id"])
            return ids

        wait_for(lambda: acknowledged <= journaled(), what="rank 0's spans journaled")
        first.kill()  # SIGKILL: no shutdown code runs

        second = ServeProcess(output, "--grace", "1", **ports)
        try:
            Path(str(pause) + ".go").touch()
            finish(rank0)
            (document,) = wait_for(lambda: documents(output), what="the run's document")
        finally:
            assert second.stop() == 0, second.log_text()
        assert "reopened run" in second.log_text()
    finally:
        for proc in (rank0, rank1):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if first.proc.poll() is None:  # failed before its kill: no server left behind
            first.kill()

    doc = assert_valid(document)
    sent = {s for r in (0, 1) for s in json.loads((tmp_path / f"spans_{r}.json").read_text())}
    assert acknowledged <= sent
    assert activity_ids(doc) == sent
    agents = {k: a for k, a in doc["agent"].items() if "otel:ml.rank" in a}
    attributed = {r["prov:entity"]: r["prov:agent"] for r in doc["wasAttributedTo"].values()}
    (rank0_steps,) = [
        e["dcterms:identifier"]
        for k, e in doc["entity"].items()
        if e["prov:label"].startswith("ml.steps") and agents[attributed[k]]["otel:ml.rank"] == 0
    ]
    rows = (document.parent / rank0_steps).read_text().splitlines()[1:]
    # The point flushed before the kill and the one sent at exit, each once.
    assert [float(row.split(",")[2]) for row in rows] == [2.0, 4.0]
