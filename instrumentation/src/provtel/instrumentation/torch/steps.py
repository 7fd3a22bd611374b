"""The step recorder: per-step values in plain lists, handed over as one block.

A *step* is one batch when a DataLoader pass is active. Without a DataLoader it is one round of
optimizer steps: it ends where its last optimizer step ended, which is known when an optimizer
that already stepped in it steps again (a GAN's second optimizer adds to the same step; the
backward passes in between open the next step). Without any optimizer constructed it runs from
one backward to the next. Recording a step costs a few ``perf_counter_ns`` calls and one
tuple appended to the block (turned into arrays when the block is handed over); the loss stays
a detached tensor until the block is read, so no device synchronisation is added per step (a
loss on the CPU is read at once: there is no device to wait for, and a float is cheaper to keep
than a tensor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from provtel.instrumentation import clock

_NS = 1e-9


#: The values of a step, in the order of a row of :attr:`Block.rows`.
_COLUMNS = (
    "start_ns",
    "duration_ns",
    "data_wait_ns",
    "backward_ns",
    "optimizer_ns",
    "losses",
    "lr",
    "batch_size",
    "skipped",
)


@dataclass(slots=True)
class Block:
    """The arrays of one block of consecutive steps (all the same length).

    While the block is open, each step is one tuple in ``rows`` (one append per step);
    :meth:`seal` turns the rows into the arrays when the block is handed over.
    """

    first: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)  # Unix ns
    duration_ns: list[int] = field(default_factory=list)
    data_wait_ns: list[int] = field(default_factory=list)
    backward_ns: list[int] = field(default_factory=list)
    optimizer_ns: list[int] = field(default_factory=list)
    losses: list[Any] = field(default_factory=list)  # floats, detached tensors or None
    lr: list[float] = field(default_factory=list)
    batch_size: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    cuda_intervals: list[Any] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)  # values logged during the block
    uses_loader: bool = False
    uses_scaler: bool = False

    def __len__(self) -> int:
        return len(self.rows) or len(self.duration_ns)

    def seal(self) -> None:
        """Move the rows into the arrays."""
        if self.rows:
            for name, column in zip(_COLUMNS, zip(*self.rows, strict=True), strict=True):
                setattr(self, name, list(column))
            self.rows = []


class StepRecorder:
    """Collects the current step's phases and appends finished steps to the open block."""

    __slots__ = (
        "_offset",
        "backward_ns",
        "batch_size",
        "block",
        "data_wait_ns",
        "had_backward",
        "loss",
        "lr",
        "next_index",
        "open",
        "optimizer_ns",
        "skipped",
        "start",
        "stepped",
        "tail_backward_ns",
        "tail_had_backward",
        "tail_loss",
        "tail_start",
    )

    def __init__(self) -> None:
        # perf_counter_ns is monotonic and cheap; Unix time = perf + the process's anchor.
        self._offset = clock.OFFSET
        self.next_index = 0
        self.block: Block | None = None
        self.open = False
        self.tail_start = 0
        self.tail_backward_ns = 0
        self.tail_had_backward = False
        self.tail_loss: Any = None
        self._reset(0)

    def _reset(self, start: int) -> None:
        # runs every step: plain stores only
        self.start = start
        self.data_wait_ns = 0
        self.backward_ns = 0
        self.optimizer_ns = 0
        self.loss: Any = None  # a float (CPU), a detached tensor (devices) or None
        self.lr = math.nan
        self.batch_size = -1
        self.skipped = 0
        self.had_backward = False
        self.stepped: tuple[int, ...] = ()  # ids of the optimizers that stepped in this step
        # Without a DataLoader: what came after the latest optimizer step of this step. It moves
        # to the next step when an optimizer steps again (Tracker.before_optimizer).
        if self.tail_start:
            self.tail_start = 0  # perf ns at the end of the latest optimizer step; 0: none yet
            self.tail_backward_ns = 0
            self.tail_had_backward = False
            self.tail_loss = None

    def unix_ns(self, perf_ns: int) -> int:
        """Convert a ``perf_counter_ns`` reading to Unix nanoseconds."""
        return perf_ns + self._offset

    def begin(self, now: int) -> Block:
        """Open a step at ``now`` (perf ns); return the block it goes to."""
        self._reset(now)
        self.open = True
        if self.block is None:
            self.block = Block(self.next_index)
        return self.block

    def end(self, now: int) -> None:
        """Close the open step at ``now`` and append it to the block."""
        if not self.open:
            return
        self.open = False
        self.block.rows.append(self._row(now))  # type: ignore[union-attr]  # made by begin()
        self.next_index += 1

    def _row(self, now: int) -> tuple[Any, ...]:
        """The open step as a row of :attr:`Block.rows`, ending at ``now``."""
        start = self.start
        return (
            start + self._offset,
            now - start,
            self.data_wait_ns,
            self.backward_ns,
            self.optimizer_ns,
            self.loss,
            self.lr,
            self.batch_size,
            self.skipped,
        )

    def advance(self, now: int) -> None:
        """:meth:`end` the open step at ``now`` and :meth:`begin` the next one there, in the
        same block (one call per DataLoader batch: the hot path, inlined)."""
        self.block.rows.append(self._row(now))  # type: ignore[union-attr]  # open: it exists
        self.next_index += 1
        self.start = now
        self.data_wait_ns = 0
        self.backward_ns = 0
        self.optimizer_ns = 0
        self.loss = None
        self.lr = math.nan
        self.batch_size = -1
        self.skipped = 0
        self.had_backward = False
        self.stepped = ()
        if self.tail_start:
            self.tail_start = 0
            self.tail_backward_ns = 0
            self.tail_had_backward = False
            self.tail_loss = None

    def next_batch(self, now: int, data_wait_ns: int, batch_size: int) -> None:
        """:meth:`advance` to the step of a DataLoader batch that was asked for at ``now`` and
        waited for ``data_wait_ns``: the DataLoader hot path (one row appended, plain stores)."""
        start = self.start
        self.block.rows.append(  # type: ignore[union-attr]  # open: it exists
            (
                start + self._offset,
                now - start,
                self.data_wait_ns,
                self.backward_ns,
                self.optimizer_ns,
                self.loss,
                self.lr,
                self.batch_size,
                self.skipped,
            )
        )
        self.next_index += 1
        self.start = now
        self.data_wait_ns = data_wait_ns
        self.backward_ns = 0
        self.optimizer_ns = 0
        self.loss = None
        self.lr = math.nan
        self.batch_size = batch_size
        self.skipped = 0
        self.had_backward = False
        self.stepped = ()
        if self.tail_start:
            self.tail_start = 0
            self.tail_backward_ns = 0
            self.tail_had_backward = False
            self.tail_loss = None

    def record(self, start: int, now: int, loss: Any, batch_size: int) -> None:
        """Append a whole step from ``start`` to ``now`` (perf ns) that had only a loss (an
        evaluation batch from the model's state) to the open block; no step is open."""
        self.block.rows.append(  # type: ignore[union-attr]  # the caller checked it exists
            (start + self._offset, now - start, 0, 0, 0, loss, math.nan, batch_size, 0)
        )
        self.next_index += 1

    def take_block(self) -> Block | None:
        """Hand over the open block (None when empty) and start a new one."""
        block, self.block = self.block, None
        if block is None or not block.rows:
            return None
        block.seal()
        return block


def seconds(values_ns: list[int]) -> list[float]:
    """Nanoseconds to seconds (semantic conventions use seconds)."""
    return [v * _NS for v in values_ns]
