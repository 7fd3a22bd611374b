"""The base of provtel's hardware instrumentors."""

from __future__ import annotations

import logging
import sys
from abc import abstractmethod
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.metrics import Meter, get_meter

from provtel.instrumentation.hardware._common import Component
from provtel.instrumentation.hardware._runtime import RUNTIME
from provtel.instrumentation.hardware.version import __version__

logger = logging.getLogger(__name__)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"


def multiprocessing_child() -> bool:
    """Whether this interpreter was started by ``multiprocessing`` (spawn or forkserver).

    Checked from the command line, because instrumentors run from ``sitecustomize``, before
    ``multiprocessing`` sets up the child.
    """
    argv = getattr(sys, "orig_argv", sys.argv)
    return "--multiprocessing-fork" in argv or any(
        arg.startswith("from multiprocessing.") for arg in argv
    )


class HardwareInstrumentor(BaseInstrumentor):
    """Registers one hardware component with the shared runtime while instrumented.

    Hardware instrumentors depend on no instrumented library: the readings degrade to
    "unavailable" when their library or device is missing, so ``instrumentation_dependencies``
    is empty and nothing is ever refused for a missing package.
    """

    _component: Component | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """No library is required: a missing one is reported as unavailable."""
        return ()

    @abstractmethod
    def _create(self, meter: Meter, **kwargs: Any) -> Component | None:
        """Build the component (and its instruments); None when there is nothing to record."""

    def _instrument(self, **kwargs: Any) -> None:
        if multiprocessing_child():
            # A DataLoader worker started with spawn/forkserver runs opentelemetry-instrument
            # again: the parent already reports the devices, the worker must not duplicate them.
            logger.debug("provtel: %s: multiprocessing child, no readings", type(self).__name__)
            return
        meter = get_meter(
            type(self).__module__,
            __version__,
            meter_provider=kwargs.get("meter_provider"),
            schema_url=SCHEMA_URL,
        )
        try:
            component = self._create(meter, **kwargs)
        except Exception:  # never abort the other instrumentors or the training
            logger.exception("provtel: %s failed to start; no readings", type(self).__name__)
            return
        if component is not None:
            self._component = component
            RUNTIME.add(component)

    def _uninstrument(self, **kwargs: Any) -> None:
        component, self._component = self._component, None
        if component is not None:
            RUNTIME.remove(component)
            component.close()
