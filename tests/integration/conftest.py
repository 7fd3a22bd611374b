"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.plain_runs import PlainRunner
from tests.support import clean_env


@pytest.fixture(scope="session")
def plain_runner() -> Iterator[PlainRunner]:
    """Runs scripts without instrumentation as ``python script.py`` does, each forked from one
    process (per worker) that imported torch once: the plain reference runs the instrumented
    runs are compared with."""
    runner = PlainRunner(clean_env())
    yield runner
    runner.close()
