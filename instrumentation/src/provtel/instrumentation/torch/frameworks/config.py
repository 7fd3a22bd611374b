"""Configuration objects handed to frameworks, flattened to hyperparameter names and values."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from provtel.instrumentation.torch.hparams import attribute_value

logger = logging.getLogger(__name__)

_MAX_DEPTH = 4


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` of a mapping, dataclass, ``argparse.Namespace`` or OmegaConf config.

    Nested containers become dotted names; values become OpenTelemetry attribute values; None
    values are left out (OTel drops them anyway).
    """
    return dict(_items(config, prefix, 0))


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    module = type(value).__module__
    if module.startswith("omegaconf"):
        try:
            from omegaconf import OmegaConf

            container = OmegaConf.to_container(value, resolve=True)
        except Exception:
            logger.debug("provtel: could not resolve an OmegaConf config", exc_info=True)
            return None
        return container if isinstance(container, Mapping) else None
    if type(value).__name__ == "Namespace" and hasattr(value, "__dict__"):
        return vars(value)
    return None


def _items(config: Any, prefix: str, depth: int) -> Iterator[tuple[str, Any]]:
    mapping = _as_mapping(config)
    if mapping is None:
        if config is not None and prefix:
            yield prefix.rstrip("."), attribute_value(config)
        return
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if depth < _MAX_DEPTH and _as_mapping(value) is not None:
            yield from _items(value, name + ".", depth + 1)
        else:
            yield name, attribute_value(value)
