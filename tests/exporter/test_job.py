"""Job identity from the launchers' environment, and one trace per job."""

from __future__ import annotations

import os
import random

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
    key = detect(SLURM).trace_key
    assert key is not None
    assert traces == {job_trace_id(key)}
    assert 0 < job_trace_id(key) < 2**128


def test_outside_a_job_traces_are_random(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*SLURM, *TORCHRUN, *OPENMPI, *MPICH):
        monkeypatch.delenv(key, raising=False)
    generator = JobIdGenerator()
    assert generator.generate_trace_id() != generator.generate_trace_id()


def _trace(env: dict[str, str]) -> int:
    key = detect(env).trace_key
    assert key is not None
    return job_trace_id(key)


@pytest.mark.parametrize(
    ("env", "other"),
    [
        # the same job number on another cluster, and reused after the counter restarted
        (
            {**SLURM, "SLURM_CLUSTER_NAME": "alps", "SLURM_JOB_START_TIME": "1764580000"},
            {**SLURM, "SLURM_CLUSTER_NAME": "leonardo", "SLURM_JOB_START_TIME": "1764580000"},
        ),
        (
            {**SLURM, "SLURM_CLUSTER_NAME": "alps", "SLURM_JOB_START_TIME": "1764580000"},
            {**SLURM, "SLURM_CLUSTER_NAME": "alps", "SLURM_JOB_START_TIME": "1796116000"},
        ),
        # torchrun launched twice with the same --rdzv-id: the rendezvous picks a new port
        (
            {**TORCHRUN, "MASTER_ADDR": "node1", "MASTER_PORT": "41234"},
            {**TORCHRUN, "MASTER_ADDR": "node1", "MASTER_PORT": "51327"},
        ),
        # two mpirun launches that reuse a job id: the launcher's contact URI differs
        (
            {**OPENMPI, "OMPI_MCA_orte_hnp_uri": "2793209856.0;tcp://10.0.0.1:40127"},
            {**OPENMPI, "OMPI_MCA_orte_hnp_uri": "2793209856.0;tcp://10.0.0.9:33001"},
        ),
        # the same job id from two launchers
        ({"SLURM_JOB_ID": "42"}, {"OMPI_MCA_ess_base_jobid": "42"}),
    ],
)
def test_reused_job_ids_get_different_traces(env: dict[str, str], other: dict[str, str]) -> None:
    assert detect(env).job_id == detect(other).job_id
    assert _trace(env) != _trace(other)
    # and their rank folders go to different job folders
    assert detect(env).launch != detect(other).launch


def test_every_rank_agrees_on_the_salted_trace() -> None:
    slurm = {**SLURM, "SLURM_CLUSTER_NAME": "alps", "SLURM_JOB_START_TIME": "1764580000"}
    ranks = [{**slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r % 4)} for r in range(8)]
    assert len({_trace(env) for env in ranks}) == 1
    torchrun = {**TORCHRUN, "MASTER_ADDR": "node1", "MASTER_PORT": "41234"}
    ranks = [{**torchrun, "RANK": str(r), "LOCAL_RANK": str(r % 2)} for r in range(4)]
    assert len({_trace(env) for env in ranks}) == 1
    assert len({detect(env).launch for env in ranks}) == 1
    assert detect(torchrun).launch == f"{_trace(torchrun):032x}"[:8]


def test_seeding_random_does_not_repeat_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*SLURM, *TORCHRUN, *OPENMPI, *MPICH):
        monkeypatch.delenv(key, raising=False)
    generator = JobIdGenerator()
    drawn = []
    for _ in range(3):
        random.seed(0)
        drawn.append((generator.generate_trace_id(), generator.generate_span_id()))
    assert len(set(drawn)) == 3
    random.seed(0)
    state = random.getstate()
    generator.generate_span_id()
    assert random.getstate() == state  # the script's random stream is untouched


def test_forked_children_draw_their_own_ids() -> None:
    generator = JobIdGenerator()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next span id and leave at once
        os.write(write, generator.generate_span_id().to_bytes(8, "big"))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 8), "big")
    os.close(read)
    os.waitpid(pid, 0)
    assert child != generator.generate_span_id()
