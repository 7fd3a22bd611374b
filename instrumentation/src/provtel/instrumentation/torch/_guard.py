"""Hooks that never break the training: a failing hook logs once and turns itself off."""

from __future__ import annotations

import logging

logger = logging.getLogger("provtel.instrumentation.torch")


class Guard:
    """The on/off switch of one hook.

    A wrapper calls :meth:`fail` from an ``except`` block around its own code (never around the
    wrapped call, whose exceptions belong to the user): the traceback is logged once and the
    hook passes calls straight through from then on.
    """

    __slots__ = ("name", "ok")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ok = True

    def fail(self) -> None:
        """Log the exception being handled and disable this hook."""
        if self.ok:
            self.ok = False
            logger.exception(
                "provtel: the PyTorch %s hook failed and is now disabled; training continues "
                "unaffected, but this part of the run is no longer recorded",
                self.name,
            )
