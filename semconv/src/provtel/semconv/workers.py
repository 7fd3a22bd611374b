"""Which processes are workers of a pool: they record nothing of their own (stdlib only).

``opentelemetry-instrument`` instruments every Python process started with its environment, so
the workers of a ``multiprocessing.Pool`` or a ``concurrent.futures.ProcessPoolExecutor``
started with ``spawn`` or ``forkserver`` are instrumented too. They are anonymous helpers of the
parent's run: their tasks must not become runs, and the pool ends them with ``SIGTERM``, which
must kill them silently as it does without provtel. Instrumentation (no run) and exporter (no
document, no signal handling) ask the same question here.

Other children of ``multiprocessing`` are not workers in this sense: the ranks of
``torch.multiprocessing.spawn`` are processes started with ``spawn`` that train, each a run.
"""

from __future__ import annotations

import sys

#: The functions a pool runs as the target of its worker processes (module, qualified name).
POOL_WORKER_TARGETS = frozenset(
    {
        ("multiprocessing.pool", "worker"),
        ("concurrent.futures.process", "_process_worker"),
    }
)


def pool_worker() -> bool:
    """True in a worker process of a ``multiprocessing`` or ``concurrent.futures`` pool.

    Decided from the process object ``multiprocessing`` runs (its target), so it is known only
    once the child has started that object: False before, and False in every other process.
    """
    process = sys.modules.get("multiprocessing.process")
    if process is None:  # multiprocessing never imported: not a child of it
        return False
    target = getattr(process.current_process(), "_target", None)
    key = (getattr(target, "__module__", None), getattr(target, "__qualname__", None))
    return key in POOL_WORKER_TARGETS


def starting_child() -> bool:
    """True in an interpreter that ``multiprocessing`` started (``spawn``, ``forkserver``, its
    resource tracker) before that child has started its process object.

    Such a process has run no user code yet; a pool that ends it at once (``SIGTERM`` right
    after start) must find it as it would without provtel.
    """
    argv = getattr(sys, "orig_argv", sys.argv)
    started_by_multiprocessing = "--multiprocessing-fork" in argv or any(
        arg.startswith("from multiprocessing.") for arg in argv
    )
    if not started_by_multiprocessing:
        return False
    process = sys.modules.get("multiprocessing.process")
    return process is None or process.parent_process() is None


def silent() -> bool:
    """True where a termination signal must act as without provtel: a pool worker, or a
    ``multiprocessing`` child that has not started its process object yet."""
    return pool_worker() or starting_child()
