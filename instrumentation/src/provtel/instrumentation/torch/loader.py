"""Passes over DataLoaders: a proxy iterator that times the wait for every batch."""

from __future__ import annotations

from typing import Any

from provtel.instrumentation.torch._guard import Guard
from provtel.instrumentation.torch.tracker import Pass, Tracker, perf

guard = Guard("DataLoader")
_TENSOR: Any = ()  # torch.Tensor once instrumented (isinstance of () is always False)
_SEQUENCES = (tuple, list)


def batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (-1 when unknown)."""
    for _ in range(4):  # tensor, or a tuple/list/dict nesting tensors
        shape = getattr(batch, "shape", None)
        if shape is not None:
            return int(shape[0]) if len(shape) else 1
        if isinstance(batch, (list, tuple)) and batch:
            batch = batch[0]
        elif isinstance(batch, dict) and batch:
            batch = next(iter(batch.values()))
        else:
            return -1
    return -1


class LoaderIterator:
    """Wraps a DataLoader iterator; the pass begins at the first batch and ends when the
    iterator is exhausted or dropped (``break``), whichever comes first."""

    __slots__ = ("__weakref__", "_it", "_loader", "_pass", "_tracker")

    def __init__(self, iterator: Any, loader: Any, tracker: Tracker) -> None:
        self._it = iterator
        self._loader = loader
        self._tracker = tracker
        self._pass: Pass | None = None

    def __iter__(self) -> LoaderIterator:
        return self

    def __len__(self) -> int:
        return len(self._it)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._it, name)

    def __next__(self) -> Any:
        tracker = self._tracker
        if not (guard.ok and tracker.enabled):
            return next(self._it)
        t0 = perf()
        if self._pass is None:
            try:
                if tracker.recorder.open:
                    tracker.end_step(t0)  # a step opened outside this loader ends here
                self._pass = tracker.start_pass(self._loader)
            except Exception:
                guard.fail()
        try:
            batch = next(self._it)
        except BaseException as exc:
            self._stop(t0, isinstance(exc, StopIteration))
            raise
        t1 = perf()
        try:
            p = self._pass
            if p is not None:
                p.batches += 1
                # the previous batch's step ends where this one starts (at t0)
                rec = tracker.loader_step(t0, p)
                rec.data_wait_ns = t1 - t0
                if type(batch) in _SEQUENCES and batch and isinstance(batch[0], _TENSOR):
                    first = batch[0]  # the usual (inputs, targets): no torch.Size built
                    rec.batch_size = first.size(0) if first.dim() else 1
                else:
                    rec.batch_size = batch_size(batch)
        except Exception:
            guard.fail()
        return batch

    def _stop(self, t0: int, exhausted: bool) -> None:
        """No batch came: the open step ended at ``t0``; an exhausted iterator ends the pass."""
        try:
            p = self._pass
            if p is not None and self._tracker.step_pass is p:
                self._tracker.end_step(t0)
        except Exception:
            guard.fail()
        if exhausted:
            self._end(perf())

    def _end(self, now: int) -> None:
        p = self._pass
        if p is None or p.ended:
            return
        try:
            self._tracker.end_pass(p, now)
        except Exception:
            guard.fail()

    def __del__(self) -> None:
        if self._pass is not None and not self._pass.ended and self._tracker.active():
            self._end(perf())


def wrap_iter(tracker: Tracker) -> Any:
    """A wrapt wrapper for ``DataLoader.__iter__``."""
    global _TENSOR
    guard.ok = True  # a hook that failed under a previous instrument() starts afresh
    _TENSOR = tracker.torch.Tensor

    def __iter__(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        iterator = wrapped(*args, **kwargs)
        if not (guard.ok and tracker.active()):
            return iterator
        return LoaderIterator(iterator, instance, tracker)

    return __iter__
