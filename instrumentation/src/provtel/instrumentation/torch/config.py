"""Settings of the PyTorch instrumentation, from the environment or ``instrument()`` arguments."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from provtel.instrumentation.torch.environment_variables import (
    OTEL_PYTHON_PROVTEL_TORCH_BLOCK_SECONDS,
    OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS,
    OTEL_PYTHON_PROVTEL_TORCH_CHECKPOINT_DIGEST,
    OTEL_PYTHON_PROVTEL_TORCH_CUDA_EVENTS,
    OTEL_PYTHON_PROVTEL_TORCH_LIVE_METRICS,
)

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class Config:
    """What the instrumentation records and how often it hands blocks over."""

    block_steps: int = 1000
    block_seconds: float = 1.0
    checkpoint_digest: bool = True
    cuda_events: bool = True
    live_metrics: bool | None = None  # None: when a live metric backend is configured

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        """Read the ``OTEL_PYTHON_PROVTEL_TORCH_*`` variables; keyword arguments win."""
        default = cls()
        values: dict[str, Any] = {
            "block_steps": _positive(
                OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS, default.block_steps, int
            ),
            "block_seconds": _positive(
                OTEL_PYTHON_PROVTEL_TORCH_BLOCK_SECONDS, default.block_seconds, float
            ),
            "checkpoint_digest": _flag(
                OTEL_PYTHON_PROVTEL_TORCH_CHECKPOINT_DIGEST, default.checkpoint_digest
            ),
            "cuda_events": _flag(OTEL_PYTHON_PROVTEL_TORCH_CUDA_EVENTS, default.cuda_events),
            "live_metrics": _flag(OTEL_PYTHON_PROVTEL_TORCH_LIVE_METRICS, None),
        }
        values.update({k: v for k, v in overrides.items() if k in values and v is not None})
        return cls(**values)


def _positive(name: str, default: Any, kind: type) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    logger.warning("provtel: %s=%r is not a positive number; using %s", name, raw, default)
    return default


def _flag(name: str, default: Any) -> Any:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    logger.warning("provtel: %s=%r is not true/false; using %s", name, raw, default)
    return default


def metric_backend_configured() -> bool:
    """Whether the SDK sends metrics somewhere live: ``OTEL_METRICS_EXPORTER`` names an exporter
    other than ``prov`` (the PROV document, which has every step in its series) and ``none``.
    Unset, the SDK's default is OTLP."""
    raw = os.environ.get("OTEL_METRICS_EXPORTER")
    if raw is None:
        return True
    return bool({n.strip().lower() for n in raw.split(",")} - {"", "prov", "none"})
