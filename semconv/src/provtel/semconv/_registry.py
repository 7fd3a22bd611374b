"""The registry every name is declared in, so README and code can be checked against each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Name:
    """One convention: the name, its value type, unit and meaning."""

    name: str
    type: str
    unit: str
    brief: str


ATTRIBUTES: dict[str, Name] = {}
METRICS: dict[str, Name] = {}
SPAN_NAMES: dict[str, Name] = {}


def attribute(name: str, type_: str, unit: str, brief: str) -> str:
    """Declare an attribute name and return it (used to define module constants)."""
    ATTRIBUTES[name] = Name(name, type_, unit, brief)
    return name


def metric(name: str, type_: str, unit: str, brief: str) -> str:
    """Declare a metric name (``type_`` is the instrument kind) and return it."""
    METRICS[name] = Name(name, type_, unit, brief)
    return name


def span_name(name: str, brief: str) -> str:
    """Declare a span name and return it."""
    SPAN_NAMES[name] = Name(name, "span", "", brief)
    return name
