"""Test support: running scripts the way a user does, and finding what they left."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
INSTRUMENT = BIN / "opentelemetry-instrument"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user who configured nothing: no OTEL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def run_instrumented(
    script: Path | str,
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``opentelemetry-instrument python script args...`` as a user would."""
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, str(script), *args],
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_documents(output_dir: Path) -> list[Path]:
    """The ``prov.json`` of every run folder under ``output_dir``."""
    return sorted(output_dir.glob("*/prov.json"))


def provtel_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the ``provtel`` command line (in this interpreter) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def unpacked(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A span's attributes with its packed per-step columns (``ml.step.X.packed``,
    :mod:`provtel.semconv.columns`) decoded back to the plain arrays ``ml.step.X``."""
    from provtel.semconv import columns

    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        name = columns.array_name(key)
        if name is None:
            out[key] = value
        else:
            out[name] = columns.decode(value)
    return out


def activities_of(prov: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """Activities of ``prov:type`` ``provtel:<kind>`` in a PROV-JSON document, in start order."""
    found = [
        a for a in prov.get("activity", {}).values() if a.get("prov:type") == f"provtel:{kind}"
    ]
    return sorted(found, key=lambda a: a["otel:start_time_unix_nano"])


def assert_nested(prov: Mapping[str, Any]) -> None:
    """Every activity of a PROV-JSON document with a parent in it begins no earlier than its
    parent and ends no later (a timeline draws it inside)."""
    by_id = {a["otel:span_id"]: a for a in prov.get("activity", {}).values()}
    for child in by_id.values():
        parent = by_id.get(child.get("otel:parent_span_id"))
        if parent is None:
            continue
        assert (
            parent["otel:start_time_unix_nano"]
            <= child["otel:start_time_unix_nano"]
            <= child["otel:end_time_unix_nano"]
            <= parent["otel:end_time_unix_nano"]
        ), (child["prov:label"], "outside", parent["prov:label"])
