"""State shared by the hardware instrumentors: their components, one sampling thread, fork safety.

Every instrumentor (NVML, AMD SMI, RAPL, host) registers a component here. The first one also
registers the energy listener with :mod:`provtel.instrumentation.activity`; the last one to go
removes it. Components with energy counters are read by one daemon thread every
``OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL`` seconds, so that wrap-around and resets are seen even
when no metric reader runs; the thread exists only while such a component is registered.

A forked child (a DataLoader worker) must record nothing: the SDK restarts its metric reader in
the child and would call our callbacks there, the sampling thread does not survive ``fork``, and
NVML handles must not be used across it. After a fork, :func:`active` is False in the child and
every callback returns at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from provtel.instrumentation import activity
from provtel.instrumentation.hardware._common import Component, EnergySource, env_float, log_once
from provtel.instrumentation.hardware.environment_variables import (
    OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL,
)

if TYPE_CHECKING:
    from provtel.instrumentation.hardware.energy import EnergyListener

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_INTERVAL_S = 5.0

_in_child = False


def active() -> bool:
    """False in a forked child, where hardware telemetry stays silent."""
    return not _in_child


class Sampler:
    """One daemon thread that calls ``sample()`` on the registered components."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._components: tuple[Component, ...] = ()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.interval_s = DEFAULT_SAMPLE_INTERVAL_S
        #: Ticks run and CPU seconds they used (``time.thread_time``), for the benchmark.
        self.ticks = 0
        self.cpu_s = 0.0
        self._atexit = False

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def add(self, component: Component) -> None:
        """Sample ``component`` too; start the thread if it is the first."""
        with self._lock:
            if component in self._components:
                return
            self._components += (component,)
            if self._thread is None:
                self.interval_s = env_float(
                    OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL, DEFAULT_SAMPLE_INTERVAL_S
                )
                if self.interval_s <= 0:
                    return
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self._stop,),
                    name="provtel-hardware-sampler",
                    daemon=True,
                )
                self._thread.start()
                if not self._atexit:
                    self._atexit = True
                    atexit.register(self.stop)

    def remove(self, component: Component) -> None:
        """Stop sampling ``component``; stop the thread after the last one."""
        with self._lock:
            self._components = tuple(c for c in self._components if c is not component)
            thread = self._thread if not self._components else None
            if thread is not None:
                self._stop.set()
                self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def stop(self) -> None:
        """Stop the thread at interpreter exit (the SDK's last collection reads the counters)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            if _in_child:
                return
            start = time.thread_time()
            for component in self._components:
                try:
                    component.sample()
                except Exception:  # a backend bug must not kill the thread or the run
                    log_once(
                        ("sample", id(component)),
                        logging.ERROR,
                        "provtel: sampling %r failed; it is no longer sampled",
                        component,
                        exc_info=True,
                    )
                    with self._lock:
                        self._components = tuple(c for c in self._components if c is not component)
            self.ticks += 1
            self.cpu_s += time.thread_time() - start

    def _after_fork_in_child(self) -> None:
        # The thread does not exist in the child, and the lock may have been held at fork time.
        self._lock = threading.Lock()
        self._thread = None
        self._components = ()


class Runtime:
    """The registered components and what they share."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.components: tuple[Component, ...] = ()
        #: Sources with energy counters, in registration order (read by the listener).
        self.energy_sources: tuple[EnergySource, ...] = ()
        self.sampler = Sampler()
        self._listener: EnergyListener | None = None

    def add(self, component: Component) -> None:
        """Register a component (instrument)."""
        from provtel.instrumentation.hardware.energy import EnergyListener

        with self._lock:
            if component in self.components:
                return
            self.components += (component,)
            self._refresh()
            if self._listener is None:
                self._listener = EnergyListener(self)
                activity.add_listener(self._listener)
        if component.energy is not None:
            self.sampler.add(component)

    def remove(self, component: Component) -> None:
        """Unregister a component (uninstrument)."""
        self.sampler.remove(component)
        with self._lock:
            self.components = tuple(c for c in self.components if c is not component)
            self._refresh()
            if not self.components and self._listener is not None:
                activity.remove_listener(self._listener)
                self._listener = None

    def _refresh(self) -> None:
        self.energy_sources = tuple(c.energy for c in self.components if c.energy is not None)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self.sampler._after_fork_in_child()


RUNTIME = Runtime()


def _after_fork_in_child() -> None:
    global _in_child
    _in_child = True
    RUNTIME._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
