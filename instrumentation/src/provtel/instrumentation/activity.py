"""Activity listeners: how measurements are tied to the activities of a run.

The PyTorch instrumentation opens and closes activities (the run, each pass over a data loader,
each block of steps). Other instrumentations (hardware energy, for example) register a listener
and are told when an activity begins and ends; at the end they return attributes for that
activity's span (``ml.energy.*``). The contract speaks only of attribute dicts, so it needs no
SDK and works for spans created after the fact (step blocks carry explicit times).

With no listener registered, :func:`begin` and :func:`finish` cost one list check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class ActivityListener(Protocol):
    """Told when an activity begins and ends."""

    def on_begin(self, kind: str) -> Any:
        """Called when an activity of ``kind`` (``run``, ``epoch``, ``evaluation``,
        ``step_block``) begins; the return value is handed back to :meth:`on_finish`."""

    def on_finish(self, kind: str, token: Any) -> Mapping[str, Any]:
        """Called when it ends; returns attributes to set on the activity's span."""


_listeners: list[ActivityListener] = []


def add_listener(listener: ActivityListener) -> None:
    """Register a listener (idempotent)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: ActivityListener) -> None:
    """Unregister a listener (no error if absent)."""
    if listener in _listeners:
        _listeners.remove(listener)


Handle = list[tuple[ActivityListener, Any]]


def begin(kind: str) -> Handle:
    """An activity begins: ask each listener for its token."""
    if not _listeners:
        return []
    handle: Handle = []
    for listener in tuple(_listeners):
        try:
            handle.append((listener, listener.on_begin(kind)))
        except Exception:  # a listener must never break the training
            logger.exception("provtel: activity listener %r failed; removing it", listener)
            remove_listener(listener)
    return handle


def finish(kind: str, handle: Handle) -> dict[str, Any]:
    """The activity ends: collect the listeners' attributes for its span."""
    attributes: dict[str, Any] = {}
    for listener, token in handle:
        try:
            attributes.update(listener.on_finish(kind, token))
        except Exception:
            logger.exception("provtel: activity listener %r failed; removing it", listener)
            remove_listener(listener)
    return attributes
