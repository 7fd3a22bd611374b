"""The semconv README lists exactly the names the code defines, with the same type and unit.

The top-level tables (``## Attributes``, ``## Metrics``, ``## Span names``) list every name except
those of ``provtel.semconv.hardware``, which the ``## Hardware`` section lists in its own tables
(``### Hardware attributes``, ``### Hardware metrics``). Every name is in exactly one table of
its kind, once.
"""

from __future__ import annotations

import re
from pathlib import Path

from provtel.semconv import ATTRIBUTES, METRICS, SPAN_NAMES, hardware
from provtel.semconv._registry import Name

README = Path(__file__).resolve().parents[2] / "semconv" / "README.md"


def _section(text: str, heading: str) -> str:
    """The body under a Markdown heading (``## X`` or ``### X``), up to the next heading of the
    same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", text, flags=re.MULTILINE)
    assert match, f"README has no '{heading}' heading"
    body = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", body, flags=re.MULTILINE)
    return body[: end.start()] if end else body


def _table(*headings: str) -> dict[str, list[str]]:
    """Rows of the table under nested headings, by name; a name listed twice fails."""
    text = README.read_text(encoding="utf-8")
    for heading in headings:
        text = _section(text, heading)
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`", cells[0]) if cells else None
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} is listed twice in {headings}"
            rows[match.group(1)] = cells[1:]
    return rows


def _hardware(registry: dict[str, Name]) -> set[str]:
    """Names declared in ``provtel.semconv.hardware``."""
    return {
        value
        for key, value in vars(hardware).items()
        if key.isupper() and isinstance(value, str) and value in registry
    }


def _check(table: dict[str, list[str]], registry: dict[str, Name], names: set[str]) -> None:
    assert set(table) == names
    for name in names:
        spec = registry[name]
        assert table[name][:2] == [spec.type, spec.unit], name


def test_attributes_table_matches_code() -> None:
    hw = _hardware(ATTRIBUTES)
    _check(_table("## Attributes"), ATTRIBUTES, set(ATTRIBUTES) - hw)


def test_metrics_table_matches_code() -> None:
    hw = _hardware(METRICS)
    _check(_table("## Metrics"), METRICS, set(METRICS) - hw)


def test_span_names_table_matches_code() -> None:
    assert set(_table("## Span names")) == set(SPAN_NAMES)


def test_hardware_attributes_table_matches_code() -> None:
    hw = _hardware(ATTRIBUTES)
    assert hw, "provtel.semconv.hardware declares attributes"
    _check(_table("## Hardware", "### Hardware attributes"), ATTRIBUTES, hw)


def test_hardware_metrics_table_matches_code() -> None:
    hw = _hardware(METRICS)
    assert hw, "provtel.semconv.hardware declares metrics"
    _check(_table("## Hardware", "### Hardware metrics"), METRICS, hw)


def test_names_are_not_declared_twice_with_different_meaning() -> None:
    # A metric may share a name with a span attribute (ml.step.duration) only with the same unit.
    for name in set(METRICS) & set(ATTRIBUTES):
        assert METRICS[name].unit == ATTRIBUTES[name].unit, name
