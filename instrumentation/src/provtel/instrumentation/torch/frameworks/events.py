"""The events a framework adapter sends to the PyTorch instrumentation's pass/step state machine.

The adapters only translate a framework's hooks into these calls; what becomes a pass, a step,
a value or an artifact is decided in one place, the state machine, for plain torch and
frameworks alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from provtel.instrumentation.torch._guard import Guard


class Events(Protocol):
    """What an adapter may tell the state machine (see CONTRACT §3 / the torch module docs)."""

    def log(
        self, name: str, value: Any, step: int | None = None, context: str | None = None
    ) -> None:
        """A value the framework logged, on the open step/pass unless ``step``/``context``."""

    def params(self, mapping: Mapping[str, Any], source: str) -> None:
        """Configuration (hyperparameters) of the run, from ``source``."""

    def artifact(self, path: str, kind: str, operation: str) -> AbstractContextManager[Any]:
        """Around a framework's save/load of ``path`` (``kind`` model|dataset|artifact)."""

    def begin_evaluation(self, context: str | None, dataset: Any) -> None:
        """An evaluation over ``dataset`` starts (``context``: validation, test or undecided)."""

    def end_evaluation(self) -> None:
        """The evaluation begun last has ended (its results have been logged)."""

    def sanity_check(self, active: bool) -> None:
        """A sanity check (not part of the run's record) starts (True) or ends (False)."""


@contextmanager
def artifact_around(
    events: Events | None, guard: Guard, path: str | None, kind: str, operation: str
) -> Iterator[None]:
    """``events.artifact(...)`` around a framework's save/load, where a failure of ours (never
    the framework's own exception) logs once through ``guard`` and leaves the call alone."""
    manager = None
    if events is not None and path is not None and guard.ok:
        try:
            manager = events.artifact(path, kind, operation)
            manager.__enter__()
        except Exception:
            manager = None
            guard.fail()
    if manager is None:
        yield
        return
    try:
        yield
    except BaseException as exc:
        try:
            manager.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:
            guard.fail()
        raise
    try:
        manager.__exit__(None, None, None)
    except Exception:
        guard.fail()
