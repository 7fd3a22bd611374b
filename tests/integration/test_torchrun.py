"""torchrun jobs: every rank in one trace, per-rank folders, one merged job document."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.support import INSTRUMENT, clean_env, provtel_cli

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"
#: a job's folder and the process of ``torchrun`` that ran it
Job = tuple[Path, subprocess.CompletedProcess[str]]


def _torchrun(cwd: Path, ranks: int) -> subprocess.CompletedProcess[str]:
    torchrun = Path(sys.executable).parent / "torchrun"
    return subprocess.run(
        [str(INSTRUMENT), str(torchrun), "--standalone", f"--nproc-per-node={ranks}", str(SCRIPT)],
        cwd=cwd,
        env=clean_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Job]:
    """``jobs(ranks)``: the folder and process of a torchrun job of ``ranks`` processes, run
    once per module (each rank imports torch: the 2-rank job is shared with the merge test)."""
    made: dict[int, Job] = {}

    def get(ranks: int) -> Job:
        if ranks not in made:
            cwd = tmp_path_factory.mktemp(f"torchrun-{ranks}")
            made[ranks] = (cwd, _torchrun(cwd, ranks))
        return made[ranks]

    return get


@pytest.mark.parametrize("ranks", [2, 4])
def test_torchrun_job_gives_one_merged_document(jobs: Callable[[int], Job], ranks: int) -> None:
    tmp_path, result = jobs(ranks)
    assert result.returncode == 0, result.stderr[-3000:]

    (job_dir,) = (tmp_path / "prov").iterdir()  # the agent process left no folder of its own
    rank_dirs = sorted(p for p in job_dir.iterdir() if p.is_dir())
    assert [p.name.split("-")[0] for p in rank_dirs] == [f"rank{r}" for r in range(ranks)]
    for rank_dir in rank_dirs:
        assert_valid(rank_dir / "prov.json")
    doc = assert_valid(job_dir / "prov.json")

    activities = doc["activity"].values()
    assert len({a["otel:trace_id"] for a in activities}) == 1  # one trace per job
    for rank in range(ranks):
        mine = [a for a in activities if a.get("provtel:rank") == rank]
        kinds = sorted(a.get("prov:type", "") for a in mine)
        assert kinds.count("provtel:Run") == 1 and kinds.count("provtel:Epoch") == 2
        assert kinds.count("provtel:StepBlock") == 2

    agents = [a for a in doc["agent"].values() if a["prov:type"]["$"] == "prov:SoftwareAgent"]
    assert sorted(a["otel:ml.rank"] for a in agents) == list(range(ranks))
    assert {a["otel:ml.world_size"] for a in agents} == {ranks}

    losses = {
        e["provtel:rank"]: e
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:Metric" and e["prov:label"] == "loss"
    }
    assert sorted(losses) == list(range(ranks))
    for rank, entity in losses.items():
        recorded = pd.read_csv(job_dir / entity["dcterms:identifier"])["value"].tolist()
        computed = json.loads((tmp_path / f"losses_{rank}.json").read_text())
        assert recorded == computed  # every step of every rank, exactly


def test_merge_command_rebuilds_the_job_document(
    jobs: Callable[[int], Job], tmp_path: Path
) -> None:
    job, result = jobs(2)
    assert result.returncode == 0, result.stderr[-3000:]
    # on a copy of the job's folder: the document the job wrote stays for the test above
    shutil.copytree(job / "prov", tmp_path / "prov")
    (job_dir,) = (tmp_path / "prov").iterdir()
    before = json.loads((job_dir / "prov.json").read_text())
    (job_dir / "prov.json").unlink()
    result = provtel_cli("merge", job_dir)
    assert result.returncode == 0, result.stderr
    after = assert_valid(job_dir / "prov.json")
    assert set(after["activity"]) == set(before["activity"])
