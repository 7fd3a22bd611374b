"""Every way a run ends leaves a document: exit, exception, sys.exit, signals, SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.support import INSTRUMENT, clean_env, provtel_cli, run_documents

SCRIPT = """
import os, sys, time
from opentelemetry import trace

tracer = trace.get_tracer("endings")
how = sys.argv[1]
# The SDK records only Exception subclasses on a span; a run span records every ending, as
# provtel's PyTorch instrumentation does.
run = tracer.start_span("run", attributes={"ml.activity": "run"})
try:
  with trace.use_span(run, end_on_exit=False):
    for i in range(3):
        with tracer.start_as_current_span(f"epoch {i}", attributes={"ml.activity": "epoch"}):
            pass
    if how == "exception":
        raise RuntimeError("diverged ✓")
    if how == "exit":
        sys.exit(3)
    if how == "wait":
        time.sleep(1.5)  # the epochs above reach the journal (0.5 s batch delay)
        print("ready", flush=True)
        time.sleep(60)
except BaseException as exc:
    run.record_exception(exc)
    run.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
    raise
finally:
    run.end()
print("done", flush=True)
"""


def _start(tmp_path: Path, how: str) -> subprocess.Popen[str]:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT, encoding="utf-8")
    return subprocess.Popen(
        [str(INSTRUMENT), sys.executable, str(script), how],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_span(doc: dict) -> dict:
    (run,) = [a for a in doc["activity"].values() if a["prov:label"] == "run"]
    return run


@pytest.mark.parametrize(
    ("how", "code", "error"),
    [
        ("normal", 0, None),
        ("exception", 1, "RuntimeError"),
        ("exit", 3, "SystemExit"),
    ],
)
def test_exit_paths(tmp_path: Path, how: str, code: int, error: str | None) -> None:
    process = _start(tmp_path, how)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)
    run = _run_span(doc)
    assert len(doc["activity"]) == 4
    if error:
        assert run["otel:status_code"] == "ERROR"
        assert run["otel:exception.type"] == error
    else:
        assert run["otel:status_code"] == "UNSET"


@pytest.mark.parametrize(
    ("signum", "code"),
    [
        (signal.SIGTERM, 143),
        (signal.SIGHUP, 129),
        (signal.SIGINT, None),
    ],
)
def test_signals_unwind_and_leave_a_document(tmp_path: Path, signum: int, code: int | None) -> None:
    process = _start(tmp_path, "wait")
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    if code is not None:
        assert process.returncode == code, stderr
    else:  # Ctrl-C: KeyboardInterrupt, Python's own exit status
        assert process.returncode != 0
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)
    run = _run_span(doc)
    assert run["otel:status_code"] == "ERROR"
    expected = (
        "KeyboardInterrupt" if signum == signal.SIGINT else "provtel.exporter.signals.Terminated"
    )
    assert run["otel:exception.type"] == expected
    if signum != signal.SIGINT:
        assert signal.Signals(signum).name in run["otel:exception.message"]


def test_sigkill_leaves_a_journal_that_recovers(tmp_path: Path) -> None:
    process = _start(tmp_path, "wait")
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.2)
    process.kill()
    process.communicate(timeout=30)
    assert not run_documents(tmp_path / "prov")
    (run_dir,) = (tmp_path / "prov").iterdir()
    result = provtel_cli("recover", run_dir)
    assert result.returncode == 0, result.stderr
    doc = assert_valid(run_dir / "prov.json")
    labels = sorted(a["prov:label"] for a in doc["activity"].values())
    # every epoch that ended more than a second before the kill, and the open run as placeholder
    assert labels == ["epoch 0", "epoch 1", "epoch 2", "span not recorded"]
    assert doc["entity"]["run:recovered_record"]["provtel:complete"] is False
    again = provtel_cli("recover", run_dir)
    assert "already has" in again.stdout
    json.loads((run_dir / "prov.json").read_text())


TRAINING = Path(__file__).parent / "scripts" / "long_training.py"


@pytest.mark.parametrize(
    ("how", "signum", "code", "message"),
    [
        ("wait", signal.SIGTERM, 143, "terminated by SIGTERM"),
        ("wait", signal.SIGHUP, 129, "terminated by SIGHUP"),
        ("wait", signal.SIGINT, -2, "KeyboardInterrupt"),  # Python re-raises SIGINT at exit
        ("exit", None, 3, "SystemExit"),
        ("raise", None, 1, "FloatingPointError"),
    ],
)
def test_a_torch_run_records_how_it_ended(
    tmp_path: Path, how: str, signum: int | None, code: int, message: str
) -> None:
    process = subprocess.Popen(
        [str(INSTRUMENT), sys.executable, str(TRAINING), how],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if signum is not None:
        assert process.stdout.readline() == "ready\n"
        time.sleep(1.5)  # some more steps and a checkpoint or two
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr[-2000:]
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)
    (run,) = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:Run"]
    assert run["otel:status_code"] == "ERROR"
    assert message in run["otel:exception.type"] + " " + run.get("otel:exception.message", "")
    (loss,) = [
        e
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:Metric" and e["prov:label"] == "loss"
    ]
    assert loss["provtel:count"] >= 40  # every step up to the end was kept
