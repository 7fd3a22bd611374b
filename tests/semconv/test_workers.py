"""Which processes are pool workers: every start method, both pool kinds, and not a rank."""

from __future__ import annotations

import concurrent.futures
import multiprocessing

import pytest

from provtel.semconv.workers import pool_worker, silent, starting_child


def _report(_: object = None) -> tuple[bool, bool]:
    return pool_worker(), silent()


def _rank(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(_report())


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_and_executor_workers_are_workers(method: str) -> None:
    context = multiprocessing.get_context(method)
    with context.Pool(1) as pool:
        assert pool.map(_report, [0]) == [(True, True)]
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        assert executor.submit(_report).result() == (True, True)


def test_a_spawned_process_is_not_a_worker() -> None:
    # torch.multiprocessing.spawn ranks are plain spawned processes: each one is a run.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_rank, args=(queue,))
    process.start()
    assert queue.get(timeout=60) == (False, False)
    process.join(60)


def test_the_parent_is_not_a_worker() -> None:
    assert _report() == (False, False)
    assert not starting_child()
