"""GPU phase timing with CUDA events: recorded per step, read back once per block.

Host wall time around ``backward()`` or ``optimizer.step()`` on CUDA measures only how long the
kernels took to *launch*. An event pair recorded on the current stream around the phase measures
the GPU time instead, and reading it at the end of a block (when the events have long completed)
adds no synchronisation per step. The event factory is injectable so that the logic is tested on
machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: A (kind, start event, end event) triple; kind is ``"b"`` (backward) or ``"o"`` (optimizer).
Interval = tuple[str, Any, Any]


class EventTimer:
    """Hands out recorded events and converts event pairs to nanoseconds, recycling events."""

    __slots__ = ("_factory", "_free")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._free: list[Any] = []

    def mark(self) -> Any:
        """Record an event on the current stream and return it."""
        event = self._free.pop() if self._free else self._factory()
        event.record()
        return event

    def read_ns(self, intervals: Sequence[Interval]) -> list[int]:
        """Elapsed GPU time of each interval, in ns; the events return to the pool."""
        out = []
        for _kind, start, end in intervals:
            end.synchronize()  # long complete at block end: returns at once
            out.append(round(start.elapsed_time(end) * 1_000_000))
            self._free.append(start)
            self._free.append(end)
        return out


def cuda_timer(torch: Any) -> EventTimer:
    """An :class:`EventTimer` on ``torch.cuda.Event(enable_timing=True)``."""
    return EventTimer(lambda: torch.cuda.Event(enable_timing=True))
