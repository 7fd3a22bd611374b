"""A process that dies without exit handlers keeps every step that ended about a second before.

The open step block is handed over off the training thread once no step has ended for half a
second, so a pause before ``kill -9`` or ``os._exit`` does not lose the steps of the block that
was still open (before: 2000 of 3000 steps after a kill, 2102 after ``os._exit``).
"""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from pathlib import Path

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.integration.test_torch_scripts import SCRIPTS
from tests.support import INSTRUMENT, clean_env, provtel_cli

pytestmark = pytest.mark.slow
SCRIPT = SCRIPTS / "pause_after_steps.py"


def _recovered_steps(output: Path) -> int:
    (folder,) = [p for p in output.iterdir() if p.is_dir()]
    recovered = provtel_cli("recover", folder)
    assert recovered.returncode == 0, recovered.stderr
    doc = assert_valid(folder / "prov.json")
    (loss,) = [
        e
        for e in doc["entity"].values()
        if e.get("prov:type") == "provml:Metric" and e["prov:label"] == "loss"
    ]
    with open(folder / loss["dcterms:identifier"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(len(rows)))
    return len(rows)


def _settle(output: Path, quiet_s: float = 1.0, limit_s: float = 30.0) -> None:
    """Wait until no file under ``output`` has changed size for ``quiet_s`` (at most
    ``limit_s``): the hand-over and export of the paused block have finished."""

    def sizes() -> dict[Path, int]:
        return {p: p.stat().st_size for p in output.rglob("*") if p.is_file()}

    deadline = time.monotonic() + limit_s
    last, since = sizes(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = sizes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    import sys

    output = tmp_path / "prov"
    process = subprocess.Popen(
        [str(INSTRUMENT), sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env=clean_env(OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(output)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return process, output


def test_kill_9_during_a_pause_keeps_every_step(tmp_path: Path) -> None:
    process, output = _start(tmp_path)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "steps done"
        time.sleep(2.5)  # well past the ~1 s promise
        _settle(output)  # and, on a machine slowed by load, until the run folder stops growing
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert _recovered_steps(output) == 3000


def test_os_exit_after_a_pause_keeps_every_step(tmp_path: Path) -> None:
    process, output = _start(tmp_path, "exit")
    assert process.wait(timeout=120) == 0
    assert _recovered_steps(output) == 3000
