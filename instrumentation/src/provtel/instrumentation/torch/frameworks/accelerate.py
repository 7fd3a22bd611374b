"""accelerate's prepared DataLoaders (``DataLoaderShard``, ``DataLoaderDispatcher``) as passes.

The Hugging Face ``Trainer`` (and any ``Accelerator.prepare``) iterates a DataLoader through
these adapters, which ask it for the next batch before handing out the current one (to know
the end of the data early). Seen at the DataLoader, every pass would start with an empty step
and hit ``StopIteration`` before its last batch is trained or evaluated; seen at the adapter's
``__iter__`` (patched here), each step is one batch the training sees and the pass ends after
the last one. The DataLoader the adapter drives is then not a pass of its own.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from provtel.instrumentation.torch import events
from provtel.instrumentation.torch._guard import Guard

logger = logging.getLogger(__name__)

#: the adapters that iterate one batch ahead
LOADERS = ("DataLoaderShard", "DataLoaderDispatcher")

Undo = Callable[[], None]


def instrument(module: Any) -> list[Undo]:
    """Patch ``accelerate.data_loader``; returns how to undo it (empty: integration off)."""
    found = [getattr(module, name, None) for name in LOADERS]
    classes = [c for c in found if c is not None and "__iter__" in vars(c)]
    if not classes:
        accelerate = sys.modules.get("accelerate")
        logger.warning(
            "provtel: accelerate %s has no %s.__iter__; its prefetching loaders are seen at the "
            "DataLoader they drive",
            getattr(accelerate, "__version__", "?"),
            " / ".join(LOADERS),
        )
        return []
    undo: list[Undo] = []
    for owner in classes:
        wrapt.wrap_function_wrapper(owner, "__iter__", _iter(owner.__name__))
        undo.append(functools.partial(unwrap, owner, "__iter__"))
    return undo


def _iter(name: str) -> Any:
    guard = Guard(f"accelerate {name}")

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        iterator = wrapped(*args, **kwargs)
        if not guard.ok:
            return iterator
        try:
            return events.framework_loader(iterator, instance)
        except Exception:
            guard.fail()
            return iterator

    return wrapper
