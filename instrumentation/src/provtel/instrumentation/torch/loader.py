"""Passes over DataLoaders: a proxy iterator that times the wait for every batch and hands
each event to the tracker (:meth:`Tracker.loader_begin`, :meth:`Tracker.batch_fetched`,
:meth:`Tracker.loader_stopped`)."""

from __future__ import annotations

import threading
from typing import Any

from provtel.instrumentation.torch._guard import Guard
from provtel.instrumentation.torch.tracker import Pass, Tracker, batch_size, perf

__all__ = ["LoaderIterator", "batch_size", "framework_iterator", "wrap_iter"]

guard = Guard("DataLoader")
_SEQUENCES = (tuple, list)


def batch_sizes(loader: Any, iterator: Any) -> tuple[int, int, int] | None:
    """``(batch_size, batches, last)``: how many samples each batch of this DataLoader
    iteration holds, as its settings say: with the default ``BatchSampler`` over a
    ``SequentialSampler`` or ``RandomSampler``, the default collate function and batches in
    order, every batch holds ``batch_size`` samples but the last of the ``batches``, which holds
    ``last`` (the rest, unless ``drop_last``). The per-step hot path then need not read the size
    from the batch (a torch call between torch's calls: ~1.5-3 µs in the loop). None for any
    other loader, or an iterator that does not count what it yielded: the batch is read."""
    try:
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

        if type(loader) is not DataLoader or own_collate(loader):
            return None
        if getattr(loader, "in_order", True) is not True:
            return None  # workers' batches may come out of order
        if type(getattr(iterator, "_num_yielded", None)) is not int:
            return None
        batches = loader.batch_sampler
        sampler = getattr(batches, "sampler", None)
        if type(batches) is not BatchSampler or type(sampler) not in (
            SequentialSampler,
            RandomSampler,
        ):
            return None
        size, count, samples = int(batches.batch_size), len(batches), len(sampler)  # type: ignore[arg-type]
    except Exception:
        return None
    if size <= 0 or count <= 0:
        return None
    last = size if batches.drop_last else samples - size * (count - 1)
    return (size, count, last) if 0 < last <= size else None


def own_collate(loader: Any) -> bool:
    """The DataLoader has a collate function of the script's own (not the default one)."""
    try:
        from torch.utils.data._utils.collate import default_collate

        collate = getattr(loader, "collate_fn", None)
        return collate is not None and collate is not default_collate
    except Exception:
        return False


class LoaderIterator:
    """Wraps a DataLoader iterator; the pass begins at the first batch and ends when the
    iterator is exhausted or dropped (``break``), whichever comes first."""

    __slots__ = (
        "__weakref__",
        "_it",
        "_loader",
        "_own_collate",
        "_pass",
        "_sizes",
        "_started",
        "_tracker",
    )

    def __init__(self, iterator: Any, loader: Any, tracker: Tracker) -> None:
        self._it = iterator
        self._loader = loader
        self._tracker = tracker
        self._pass: Pass | None = None
        self._started = False
        self._sizes: tuple[int, int, int] | None = None  # batch_sizes(), at the first batch
        self._own_collate = False  # a collate function of the script's own, at the first batch

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
        if not self._started:
            self._started = True
            try:
                self._pass = tracker.loader_begin(self._loader, t0)
                self._sizes = batch_sizes(self._loader, self._it)
                self._own_collate = own_collate(self._loader)
            except Exception:
                guard.fail()
        try:
            batch = next(self._it)
        except BaseException as exc:
            self._stop(t0, isinstance(exc, StopIteration))
            raise
        t1 = perf()
        p = self._pass
        if p is None:
            return batch
        try:
            sizes = self._sizes
            known = None  # the batch's size when the loader's settings say it, else read
            if sizes is not None:
                n = self._it._num_yielded  # torch's iterator counts what it yielded
                known = sizes[0] if n < sizes[1] else sizes[2] if n == sizes[1] else None
            elif self._own_collate:
                known = batch_size(batch, samples=True)  # it may hand out a list of samples
            rec = tracker.recorder
            if (
                rec.open
                and tracker.block_pass is p
                and tracker.step_from_loader
                and rec.next_index + 1 < tracker.block_end_index
                and t0 < tracker.block_deadline
            ):
                # the usual batch: the next step of the same block (Tracker.loader_step's
                # first case, inlined: this runs once per step)
                p.batches += 1
                tracker.last_boundary = t0
                if known is not None:
                    rec.next_batch(t0, t1 - t0, known)
                elif (
                    type(batch) in _SEQUENCES
                    and batch
                    and isinstance(batch[0], tracker._tensor_type)
                ):
                    shape = batch[0].shape  # a torch.Size: () for a 0-d tensor
                    rec.next_batch(t0, t1 - t0, shape[0] if shape else 1)
                else:
                    rec.next_batch(t0, t1 - t0, batch_size(batch))
            else:
                tracker.batch_fetched(p, t0, t1, batch, known)
        except Exception:
            guard.fail()
        return batch

    def _stop(self, t0: int, exhausted: bool) -> None:
        try:
            self._tracker.loader_stopped(self._pass, t0, exhausted)
        except Exception:
            guard.fail()

    def __del__(self) -> None:
        p = self._pass
        if p is not None and not p.ended and self._tracker.active():
            try:
                self._tracker.loader_dropped(p)
            except Exception:
                guard.fail()


#: ``depth``: >0 while a framework's loader starts iterating the DataLoader it drives
_inner = threading.local()


class _Driving:
    """A framework loader's iterator (a generator): while its first batch is asked for, the
    DataLoader it iterates inside is not a pass of its own (:func:`framework_iterator`)."""

    __slots__ = ("_first", "_it")

    def __init__(self, iterator: Any) -> None:
        self._it = iterator
        self._first = True

    def __iter__(self) -> _Driving:
        return self

    def __next__(self) -> Any:
        if not self._first:
            return next(self._it)
        self._first = False
        _inner.depth = getattr(_inner, "depth", 0) + 1
        try:
            return next(self._it)
        finally:
            _inner.depth -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._it, name)


def framework_iterator(tracker: Tracker, iterator: Any, loader: Any) -> Any:
    """The pass of a framework's loader that drives a DataLoader inside and asks it for one
    batch ahead (accelerate's ``DataLoaderShard``): its batches are timed as the framework hands
    them out, so each step is one batch the training sees and the pass ends after its last."""
    if not (guard.ok and tracker.active()):
        return iterator
    return LoaderIterator(_Driving(iterator), loader, tracker)


def wrap_iter(tracker: Tracker) -> Any:
    """A wrapt wrapper for ``DataLoader.__iter__``."""
    guard.ok = True  # a hook that failed under a previous instrument() starts afresh

    def __iter__(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        iterator = wrapped(*args, **kwargs)
        if not (guard.ok and tracker.active()) or getattr(_inner, "depth", 0) > 0:
            return iterator
        return LoaderIterator(iterator, instance, tracker)

    return __iter__
