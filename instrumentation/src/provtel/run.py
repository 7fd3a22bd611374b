"""``provtel.run(name=...)``: a named run (see :mod:`provtel.instrumentation.runs`).

``provtel`` is a namespace package shared by three distributions, so it has no ``__init__``;
``import provtel.run`` makes this module callable as ``provtel.run(...)``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from provtel.instrumentation.runs import run

__all__ = ["run"]


class _CallableModule(types.ModuleType):
    def __call__(self, name: str | None = None, **hyperparameters: Any) -> Any:
        return run(name, **hyperparameters)


sys.modules[__name__].__class__ = _CallableModule
