"""Job identity from the launchers' environment, and one trace per job."""

from __future__ import annotations

import pytest

from provtel.exporter.job import Job, JobIdGenerator, detect, job_trace_id

TORCHRUN = {
    "RANK": "3",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "4",
    "GROUP_RANK": "1",
    "TORCHELASTIC_RUN_ID": "a1b2",
}
SLURM = {
    "SLURM_JOB_ID": "123456",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_NODEID": "2",
}
OPENMPI = {
    "OMPI_COMM_WORLD_RANK": "2",
    "OMPI_COMM_WORLD_LOCAL_RANK": "0",
    "OMPI_COMM_WORLD_SIZE": "16",
    "OMPI_MCA_ess_base_jobid": "42",
}
MPICH = {"PMI_RANK": "7", "PMI_SIZE": "8", "MPI_LOCALRANKID": "3", "PMIX_NAMESPACE": "ns-9"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (TORCHRUN, Job("a1b2", "torchrun", 3, 1, 4, 1)),
        (SLURM, Job("123456.0", "slurm", 5, 1, 8, 2)),
        ({**SLURM, **TORCHRUN}, Job("123456.0-a1b2", "torchrun", 3, 1, 4, 1)),  # torchrun in SLURM
        (OPENMPI, Job("42", "mpi", 2, 0, 16, None)),
        (MPICH, Job("ns-9", "mpi", 7, 3, 8, None)),
        ({}, Job(None, None, None, None, None, None)),
        ({"RANK": "x", "WORLD_SIZE": ""}, Job(None, None, None, None, None, None)),
    ],
)
def test_detect(env: dict[str, str], expected: Job) -> None:
    assert detect(env) == expected


def test_resource_attributes_and_merge_decision() -> None:
    job = detect(SLURM)
    assert job.multi_rank
    assert job.attributes() == {
        "ml.job.id": "123456.0",
        "ml.job.scheduler": "slurm",
        "ml.rank": 5,
        "ml.local_rank": 1,
        "ml.world_size": 8,
        "ml.node.rank": 2,
    }
    assert not detect({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).multi_rank
    assert not detect({"RANK": "0", "WORLD_SIZE": "2"}).multi_rank  # no shared identity


def test_every_rank_of_a_job_gets_the_same_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    traces = set()
    for rank in range(4):
        for key, value in {**SLURM, "SLURM_PROCID": str(rank)}.items():
            monkeypatch.setenv(key, value)
        generator = JobIdGenerator()
        traces.add(generator.generate_trace_id())
        assert generator.generate_span_id() != generator.generate_span_id()
    assert traces == {job_trace_id("123456.0")}
    assert 0 < job_trace_id("123456.0") < 2**128


def test_outside_a_job_traces_are_random(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*SLURM, *TORCHRUN, *OPENMPI, *MPICH):
        monkeypatch.delenv(key, raising=False)
    generator = JobIdGenerator()
    assert generator.generate_trace_id() != generator.generate_trace_id()
