"""Distributed jobs: who this process is (rank, node, job) and the trace all ranks share.

Read from the environment the launchers set: torchrun (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``GROUP_RANK``, ``TORCHELASTIC_RUN_ID``), SLURM (``SLURM_JOB_ID``, ``SLURM_STEP_ID``,
``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``, ``SLURM_NODEID``) and MPI launchers
(Open MPI ``OMPI_COMM_WORLD_*``, MPICH/Intel ``PMI_RANK``/``PMI_SIZE``). No OpenTelemetry
convention covers HPC jobs, so the names are provtel's (``ml.job.id``, ``ml.rank`` ...).

All ranks of one job derive the same trace id from the job identity
(:class:`JobIdGenerator`), so a backend shows one trace per job, and the exporter writes each
rank into ``<output>/<run>-<job>/rank<R>-...`` and merges them into one document.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from provtel.semconv import attributes as sc


@dataclass(frozen=True, slots=True)
class Job:
    """The job identity of this process (``job_id`` None when no launcher set one)."""

    job_id: str | None
    scheduler: str | None
    rank: int | None
    local_rank: int | None
    world_size: int | None
    node_rank: int | None

    @property
    def multi_rank(self) -> bool:
        """True for a job of several ranks with a shared identity (outputs are merged)."""
        return bool(self.job_id) and (self.world_size or 1) > 1 and self.rank is not None

    def attributes(self) -> dict[str, object]:
        """Resource attributes describing the job."""
        values = {
            sc.ML_JOB_ID: self.job_id,
            sc.ML_JOB_SCHEDULER: self.scheduler,
            sc.ML_RANK: self.rank,
            sc.ML_LOCAL_RANK: self.local_rank,
            sc.ML_WORLD_SIZE: self.world_size,
            sc.ML_NODE_RANK: self.node_rank,
        }
        return {k: v for k, v in values.items() if v is not None}


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = env.get(name, "").strip()
        if value.lstrip("-").isdigit():
            return int(value)
    return None


def detect(env: Mapping[str, str] | None = None) -> Job:
    """The job identity from the launcher's environment variables."""
    env = os.environ if env is None else env
    job_id = scheduler = None
    if env.get("SLURM_JOB_ID"):
        scheduler = "slurm"
        job_id = env["SLURM_JOB_ID"]
        if env.get("SLURM_STEP_ID"):
            job_id += "." + env["SLURM_STEP_ID"]
    if env.get("TORCHELASTIC_RUN_ID") and env.get("TORCHELASTIC_RUN_ID") != "none":
        # torchrun inside SLURM: the elastic run id is what all ranks of this launch share
        scheduler = "torchrun"
        job_id = (
            env["TORCHELASTIC_RUN_ID"]
            if job_id is None
            else f"{job_id}-{env['TORCHELASTIC_RUN_ID']}"
        )
    elif job_id is None and (env.get("OMPI_MCA_ess_base_jobid") or env.get("PMIX_NAMESPACE")):
        scheduler = "mpi"
        job_id = env.get("OMPI_MCA_ess_base_jobid") or env.get("PMIX_NAMESPACE")
    return Job(
        job_id=job_id,
        scheduler=scheduler,
        rank=_int(env, "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"),
        local_rank=_int(
            env, "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"
        ),
        world_size=_int(env, "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"),
        node_rank=_int(env, "GROUP_RANK", "NODE_RANK", "SLURM_NODEID"),
    )


def job_trace_id(job_id: str) -> int:
    """A valid (non-zero) 128-bit trace id derived from the job identity."""
    value = int.from_bytes(hashlib.sha256(b"provtel-job:" + job_id.encode()).digest()[:16], "big")
    return value or 1


class JobIdGenerator(RandomIdGenerator):
    """Trace ids derived from the job identity (random outside a job); span ids random.

    Registered as the ``provtel`` id generator; provtel's distro selects it.
    """

    def __init__(self) -> None:
        job = detect()
        self._trace_id = job_trace_id(job.job_id) if job.job_id else None

    def generate_trace_id(self) -> int:
        return self._trace_id if self._trace_id is not None else super().generate_trace_id()
