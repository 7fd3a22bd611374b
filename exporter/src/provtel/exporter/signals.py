"""Termination signals end a run the way Ctrl-C does: by unwinding, so exit handlers run.

SLURM and Kubernetes stop jobs with SIGTERM (and terminals hang up with SIGHUP). Python's
default action for them kills the process without running ``atexit``, so the SDK never flushes
and the run's document is never written. provtel turns them into :class:`Terminated`, a
``SystemExit`` with the conventional status ``128 + signal``: ``finally`` blocks, context
managers, instrumentation and the SDK's exit handlers all run, and the process still ends with
the status a shell expects (143 for SIGTERM).

Only signals whose handler is still the default are taken over: an application's own handler
always wins. Forked children (DataLoader workers) get the default action back, and so do the
workers of a ``multiprocessing`` or ``concurrent.futures`` pool whatever their start method
(:mod:`provtel.semconv.workers`): a pool ends them with SIGTERM, and they die as without provtel.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from provtel.semconv import workers

logger = logging.getLogger(__name__)

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
_installed: list[signal.Signals] = []


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum)

    def __str__(self) -> str:
        return f"terminated by {self.signal.name}"


def _handle(signum: int, frame: FrameType | None) -> None:
    if workers.silent():
        # A pool's worker (or a multiprocessing child still starting) is ended by its pool
        # with SIGTERM: it dies at once and silently, as it does without provtel.
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    raise Terminated(signum)


def _restore_defaults() -> None:
    for signum in _installed:
        signal.signal(signum, signal.SIG_DFL)
    _installed.clear()


def install() -> list[signal.Signals]:
    """Take over SIGTERM/SIGHUP where they still have the default action; return those taken."""
    if threading.current_thread() is not threading.main_thread():
        return []
    for signum in SIGNALS:
        if signum in _installed:
            continue
        try:
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _handle)
                _installed.append(signal.Signals(signum))
        except (OSError, ValueError) as exc:  # embedded interpreters, restricted environments
            logger.debug("provtel: cannot handle %s: %s", signum, exc)
    return list(_installed)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restore_defaults)
