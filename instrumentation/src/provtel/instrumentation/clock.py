"""One clock for every time provtel records in a process.

Span times, step times and logged values' times all come from here: the Unix time read once
(when this module is imported), advanced by the monotonic ``perf_counter_ns``. Mixing the two
clocks is what made a pass end before it began: a pass span started at the SDK's default
``time.time_ns()`` and ended at a ``perf_counter_ns`` reading converted with an offset taken
seconds earlier, and the wall clock had moved against the monotonic one meanwhile (an NTP or
hypervisor correction; CI saw 1.4 ms within a 6-second run). With one anchored clock every
interval provtel records is ordered as it happened, whatever the wall clock does during the
run; the price is that times drift from the wall clock by whatever it was corrected by since
the process started (the OpenTelemetry Java and JavaScript SDKs anchor span times the same
way). The monotonic clock is system-wide, so forked children keep the parent's anchor.
"""

from __future__ import annotations

import time

_perf = time.perf_counter_ns
OFFSET = time.time_ns() - _perf()  # Unix ns = perf_counter_ns + OFFSET


def unix_ns() -> int:
    """Now, in Unix nanoseconds on the process's anchored clock."""
    return _perf() + OFFSET
