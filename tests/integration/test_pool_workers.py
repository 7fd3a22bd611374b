"""multiprocessing.Pool workers (spawn, forkserver) record nothing of their own and print
nothing the plain script does not; the parent's document is the same as without a pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.integration.plain_runs import PlainRunner
from tests.support import clean_env, run_documents, run_instrumented

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "scripts" / "pool_workers.py"


def _without_summaries(stderr: str) -> tuple[str, list[str]]:
    """stderr without provtel's end-of-run summaries, and the run folder each one names."""
    kept, folders, in_summary = [], [], False
    for line in stderr.splitlines(True):
        if line.startswith("provtel: "):
            folders.append(line.removeprefix("provtel: ").strip())
            in_summary = True
        elif not (in_summary and line.startswith("  ")):
            in_summary = False
            kept.append(line)
    return "".join(kept), folders


@pytest.mark.parametrize(("method", "ending"), [("spawn", "with"), ("forkserver", "close")])
def test_pool_workers_record_and_print_nothing(
    tmp_path: Path, method: str, ending: str, plain_runner: PlainRunner
) -> None:
    plain_dir, instrumented_dir = tmp_path / "plain", tmp_path / "instrumented"
    plain_dir.mkdir()
    instrumented_dir.mkdir()
    plain = plain_runner.run(
        SCRIPT,
        method,
        ending,
        cwd=plain_dir,
        env=clean_env(),
        timeout=300,  # spawned workers each import torch: ~11 s idle, minutes under load
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    result = run_instrumented(
        SCRIPT, method, ending, cwd=instrumented_dir, env=clean_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stderr, summaries = _without_summaries(result.stderr)
    assert stderr == plain.stderr
    assert result.stdout == plain.stdout
    done = json.loads((instrumented_dir / "done.json").read_text())
    assert done == json.loads((plain_dir / "done.json").read_text())  # the same results

    (document,) = run_documents(instrumented_dir / "prov")  # no folder of a worker
    assert summaries == [str(document.parent)]
    doc = assert_valid(document)
    activities = list(doc["activity"].values())
    runs = [a for a in activities if a.get("prov:type") == "provtel:Run"]
    assert len(runs) == 1
    assert runs[0]["otel:status_code"] == "UNSET"
    epochs = [a for a in activities if a.get("prov:type") == "provtel:Epoch"]
    assert [a["otel:ml.pass.batches"] for a in epochs] == [done["batches"]]
    agents = [a for a in doc["agent"].values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    assert len(agents) == 1  # only the main process reported anything
