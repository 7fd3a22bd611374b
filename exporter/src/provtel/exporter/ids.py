"""Trace and span ids that user code cannot steer.

The SDK's ``RandomIdGenerator`` draws ids from the process-global :mod:`random` module, so a
script that calls ``random.seed(...)`` (per-epoch augmentation seeds, Lightning's
``seed_everything``, the demo's ``random.seed(42)``) repeats span ids inside a run and trace ids
across runs: activities vanish from the document, parents form cycles, and two runs become one
trace in a backend. provtel's ids come from a private :class:`random.Random` seeded from the
operating system (:func:`os.urandom`), re-seeded in every forked child so that a DataLoader
worker or a ``fork`` start method never repeats its parent's ids. Nothing here touches the
global ``random`` state, so the script's random streams are unchanged too.
"""

from __future__ import annotations

import os
import random

from opentelemetry.sdk.trace.id_generator import IdGenerator

_generator = random.Random(os.urandom(32))


def _reseed() -> None:
    _generator.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def random_span_id() -> int:
    """A valid (non-zero) 64-bit span id from the private generator."""
    while True:
        value = _generator.getrandbits(64)
        if value:
            return value


def random_trace_id() -> int:
    """A valid (non-zero) 128-bit trace id from the private generator."""
    while True:
        value = _generator.getrandbits(128)
        if value:
            return value


class PrivateIdGenerator(IdGenerator):
    """Random trace and span ids from an OS-seeded generator of provtel's own."""

    def generate_span_id(self) -> int:
        """A random span id, independent of :mod:`random`'s global state."""
        return random_span_id()

    def generate_trace_id(self) -> int:
        """A random trace id, independent of :mod:`random`'s global state."""
        return random_trace_id()
