"""The semconv README lists exactly the names the code defines, with the same type and unit."""

from __future__ import annotations

import re
from pathlib import Path

from provtel.semconv import ATTRIBUTES, METRICS, SPAN_NAMES

README = Path(__file__).resolve().parents[2] / "semconv" / "README.md"


def _table(section: str) -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8").split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`", cells[0]) if cells else None
        if match:
            rows[match.group(1)] = cells[1:]
    return rows


def test_attributes_table_matches_code() -> None:
    table = _table("Attributes")
    assert set(table) == set(ATTRIBUTES)
    for name, spec in ATTRIBUTES.items():
        assert table[name][:2] == [spec.type, spec.unit], name


def test_metrics_table_matches_code() -> None:
    table = _table("Metrics")
    assert set(table) == set(METRICS)
    for name, spec in METRICS.items():
        assert table[name][:2] == [spec.type, spec.unit], name


def test_span_names_table_matches_code() -> None:
    assert set(_table("Span names")) == set(SPAN_NAMES)


def test_names_are_not_declared_twice_with_different_meaning() -> None:
    # A metric may share a name with a span attribute (ml.step.duration) only with the same unit.
    for name in set(METRICS) & set(ATTRIBUTES):
        assert METRICS[name].unit == ATTRIBUTES[name].unit, name
