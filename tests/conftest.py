"""Shared fixtures, and how the suite is spread over pytest-xdist workers."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One intra-op (OpenMP) thread per torch process: the suite runs two workers on two cores, each
# starting training scripts, and a second thread per process only spins beside the other
# worker's process (the demo took 13.2 s of CPU with two threads, 9.0 with one). Set before any
# test imports torch; the workers and every script they start inherit it (clean_env keeps it).
# Nothing the tests assert depends on it; a CI that sets its own value keeps it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Test folders whose tests mostly run real processes (instrumented training scripts, servers,
#: browsers): started first, so that the two workers end on the short in-process tests together.
_HEAVY_FOLDERS = ("integration", "compat", "receiver")

#: A fixture made once per module (or package, or session): the run several tests assert on.
_SHARED_FIXTURE = re.compile(r"@pytest\.fixture\(\s*scope=[\"'](?:module|package|session)[\"']")


@pytest.fixture
def write_script(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a script into the test's directory and return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the folders of slow tests first (every worker collects in this same order)."""

    def heavy_first(item: pytest.Item) -> int:
        parts = Path(item.nodeid.split("::", 1)[0]).parts
        return 0 if len(parts) > 1 and parts[1] in _HEAVY_FOLDERS else 1

    items.sort(key=heavy_first)  # stable: the order within a folder and a module is kept


@cache
def _shares_runs(module: str) -> bool:
    """Whether a test module defines a module-, package- or session-scoped fixture."""
    path = ROOT / module
    return path.is_file() and bool(_SHARED_FIXTURE.search(path.read_text(encoding="utf-8")))


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover - pytest-xdist is a dev dependency
    pass
else:

    class SharedRunScheduling(LoadScopeScheduling):
        """``--dist loadgroup`` (pyproject's addopts): the tests of a module that makes a run
        once (a module-scoped fixture) are one unit of work on one worker, so the run is made
        once, not once per worker that gets one of its tests; every other test is a unit of its
        own. Units with the most tests go first (xdist's ``--loadscope-reorder``).

        It stands in for xdist's own loadgroup, which pytest >= 9.2 defeats: xdist 3.8 groups
        by renaming ``item._nodeid``, which pytest 9.2 no longer reads, so every test was a
        unit of its own and both workers made the same runs.
        """

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if _shares_runs(module) else nodeid

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """The scheduler for ``--dist loadgroup``; xdist's own for every other mode."""
        if config.getoption("dist") != "loadgroup":
            return None
        return SharedRunScheduling(config, log)
