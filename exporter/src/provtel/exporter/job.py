"""Distributed jobs: who this process is (rank, node, job) and the trace all ranks share.

Read from the environment the launchers set: torchrun (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``GROUP_RANK``, ``TORCHELASTIC_RUN_ID``), SLURM (``SLURM_JOB_ID``, ``SLURM_STEP_ID``,
``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``, ``SLURM_NODEID``) and MPI launchers
(Open MPI ``OMPI_COMM_WORLD_*``, MPICH/Intel ``PMI_RANK``/``PMI_SIZE``). No OpenTelemetry
convention covers HPC jobs, so the names are provtel's (``ml.job.id``, ``ml.rank`` ...).

All ranks of one job derive the same trace id from the job identity
(:class:`JobIdGenerator`), so a backend shows one trace per job, and the exporter writes each
rank into ``<output>/<run>-<job>/rank<R>-...`` and merges them into one document. Job numbers are
not unique: SLURM restarts its counter and every cluster has its own, torchrun users pass the
same ``--rdzv-id`` to every launch, MPI job ids are derived from the launcher's pid. So the trace
is derived from :attr:`Job.trace_key`, which adds what tells launches apart and is still the
same on every rank: the SLURM cluster name and job start time, the rendezvous address and port
torchrun's agents agreed on, the Open MPI launcher's contact URI. Span ids (and trace ids outside
a job) come from provtel's private generator (:mod:`provtel.exporter.ids`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from provtel.exporter.ids import PrivateIdGenerator
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
    #: What the trace id is derived from: the job id plus what tells reused job ids apart.
    trace_key: str | None = field(default=None, compare=False)

    @property
    def multi_rank(self) -> bool:
        """True for a job of several ranks with a shared identity (outputs are merged)."""
        return bool(self.job_id) and (self.world_size or 1) > 1 and self.rank is not None

    @property
    def launch(self) -> str | None:
        """8 hex digits of the job's trace id: tells apart launches that reuse a job id (the job
        folder is ``<run>-<job id>-<launch>``, the way the receiver names runs by trace id)."""
        return None if self.trace_key is None else f"{job_trace_id(self.trace_key):032x}"[:8]

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
        trace_key=_trace_key(env, job_id, scheduler),
        job_id=job_id,
        scheduler=scheduler,
        rank=_int(env, "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"),
        local_rank=_int(
            env, "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"
        ),
        world_size=_int(env, "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"),
        node_rank=_int(env, "GROUP_RANK", "NODE_RANK", "SLURM_NODEID"),
    )


#: Variables that tell launches with the same job id apart, identical on every rank of one.
_LAUNCH_SALT = {
    # Slurm >= 23.02 sets the start time; the cluster name separates federated clusters.
    "slurm": ("SLURM_CLUSTER_NAME", "SLURM_JOB_START_TIME"),
    # The rendezvous picks the store's host and a free port per launch (c10d, --standalone).
    "torchrun": ("SLURM_CLUSTER_NAME", "SLURM_JOB_START_TIME", "MASTER_ADDR", "MASTER_PORT"),
    # Open MPI 4: the launcher's contact URI (its address and ephemeral port).
    "mpi": ("OMPI_MCA_orte_hnp_uri",),
}


def _trace_key(env: Mapping[str, str], job_id: str | None, scheduler: str | None) -> str | None:
    if not job_id or scheduler is None:
        return None
    salt = [f"{name}={env[name]}" for name in _LAUNCH_SALT[scheduler] if env.get(name)]
    return "\n".join([scheduler, job_id, *salt])


def job_trace_id(key: str) -> int:
    """A valid (non-zero) 128-bit trace id derived from a job's :attr:`Job.trace_key`."""
    value = int.from_bytes(hashlib.sha256(b"provtel-job:" + key.encode()).digest()[:16], "big")
    return value or 1


class JobIdGenerator(PrivateIdGenerator):
    """Trace ids derived from the job identity (random outside a job); span ids random.

    Random ids come from provtel's private, OS-seeded generator, never from the global
    :mod:`random` that scripts seed. Registered as the ``provtel`` id generator; provtel's
    distro selects it.
    """

    def __init__(self) -> None:
        job = detect()
        self._trace_id = job_trace_id(job.trace_key) if job.trace_key else None

    def generate_trace_id(self) -> int:
        """The job's trace id in a job, a random one otherwise."""
        return self._trace_id if self._trace_id is not None else super().generate_trace_id()
