"""Loss hooks: every loss the script computes, seen from ``torch.nn.functional`` and ``_Loss``.

The wrappers live outside the ``provtel.instrumentation.torch`` package on purpose: torch.compile
skips that package's files (a graph break wherever they are called), while these wrappers must
be traceable when a loss is computed inside a compiled function. Under compilation they return
the original result and record nothing (``torch.compiler.is_compiling()`` is a constant to the
tracer); in eager code a loss with no autograd graph (``torch.no_grad``, ``inference_mode``, or
inputs that need no gradient) is handed to the sink: an evaluation batch. A loss module calling
a functional loss is reported once (the module's result).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

#: The functional losses of ``torch.nn.functional`` that are wrapped (the ones present).
FUNCTIONAL_LOSSES = (
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cosine_embedding_loss",
    "cross_entropy",
    "ctc_loss",
    "gaussian_nll_loss",
    "hinge_embedding_loss",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "margin_ranking_loss",
    "mse_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "nll_loss",
    "poisson_nll_loss",
    "smooth_l1_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
)

Sink = Callable[[Any, tuple[Any, ...], dict[str, Any]], None]


class _State:
    __slots__ = ("depth", "sink")

    def __init__(self) -> None:
        self.sink: Sink | None = None
        self.depth = 0  # >0 inside a loss module's call: its functional loss is not reported


state = _State()


def functional(original: Any, is_compiling: Callable[[], bool]) -> Any:
    """A replacement for ``torch.nn.functional.<loss>``."""

    @functools.wraps(original)
    def loss(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if result.requires_grad or state.depth:
            return result  # training (backward records it), or inside a loss module
        if is_compiling():
            return result
        sink = state.sink
        if sink is not None:
            sink(result, args, kwargs)
        return result

    return loss


def module_call(
    original: Any,
    is_compiling: Callable[[], bool],
    grad_enabled: Callable[[], bool] = lambda: False,
) -> Any:
    """A replacement for ``torch.nn.modules.loss._Loss.__call__``.

    ``grad_enabled`` is ``torch.is_grad_enabled``: with gradients on and an input that requires
    them the loss is a training loss (backward records it), so the call goes straight through
    (the per-step path: two reads, no bookkeeping)."""

    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args and grad_enabled() and getattr(args[0], "requires_grad", False):
            return original(self, *args, **kwargs)
        if is_compiling():
            return original(self, *args, **kwargs)
        state.depth += 1
        try:
            result = original(self, *args, **kwargs)
        finally:
            state.depth -= 1
        sink = state.sink
        if sink is not None and not state.depth and not getattr(result, "requires_grad", True):
            sink(result, args, kwargs)
        return result

    return __call__
