"""Logged values: rows kept with the activity they belong to, sent as one columnar table.

A value logged by user code (``provtel.log_metric``), by a framework integration or by the
evaluation summary is one row ``(name, value, step, context, time_ns)`` appended to the open
step block, else the open pass, else the run. When that activity's span is sent, its rows become
the parallel arrays ``ml.log.name``, ``ml.log.value``, ``ml.log.step``, ``ml.log.context`` and
``ml.log.time`` (OTLP arrays, no per-value span). A value on a device stays a tensor until then
and all of a table's device values are read in one transfer.
"""

from __future__ import annotations

import math
from typing import Any

from provtel.instrumentation._context import USER_CONTEXT
from provtel.semconv import attributes as sc

__all__ = ["USER_CONTEXT", "Row", "loggable", "read_values", "table"]

#: One logged value: name, value (float or tensor), step (-1: none), context (None: the
#: activity's), Unix time in ns.
Row = tuple[str, Any, int, "str | None", int]


def loggable(value: Any) -> Any:
    """The value to keep for a row: a float, a one-element tensor (detached), else None."""
    if type(value) is float:
        return value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    numel = getattr(value, "numel", None)
    if numel is not None:
        try:
            if numel() != 1:
                return None
            return value.detach() if not getattr(value, "is_cpu", True) else float(value.item())
        except Exception:
            return None
    try:
        return float(value)  # numpy scalars and friends
    except (TypeError, ValueError):
        return None


def read_values(torch: Any, values: list[Any]) -> list[float]:
    """Floats for a table's values: device tensors read in one transfer."""
    out = [math.nan] * len(values)
    device = [i for i, v in enumerate(values) if type(v) is not float and v is not None]
    if device and torch is not None:
        read = torch.stack([values[i].reshape(()).float() for i in device]).tolist()
        for i, v in zip(device, read, strict=True):
            out[i] = float(v)
    for i, v in enumerate(values):
        if type(v) is float:
            out[i] = v
    return out


def table(torch: Any, rows: list[Row], default_context: str) -> dict[str, Any]:
    """The ``ml.log.*`` attributes of ``rows`` (empty when there are none)."""
    if not rows:
        return {}
    names, values, steps, contexts, times = zip(*rows, strict=True)
    return {
        sc.ML_LOG_NAME: list(names),
        sc.ML_LOG_VALUE: read_values(torch, list(values)),
        sc.ML_LOG_STEP: list(steps),
        sc.ML_LOG_CONTEXT: [c or default_context for c in contexts],
        sc.ML_LOG_TIME: list(times),
    }
