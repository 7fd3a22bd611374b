"""The ``ml.log.*`` table of a span becomes one series per (name, context)."""

from __future__ import annotations

from provtel.exporter.prov.mapping import step_series
from provtel.semconv import attributes as sc


def test_logged_values_become_series_per_name_and_context() -> None:
    record = {
        "attributes": {
            sc.ML_ACTIVITY: "evaluation",
            sc.ML_CONTEXT: "validation",
            sc.ML_EPOCH: 2,
            sc.ML_LOG_NAME: ["eval_loss", "accuracy", "accuracy"],
            sc.ML_LOG_VALUE: [0.25, 0.5, 0.75],
            sc.ML_LOG_STEP: [100, -1, 7],
            sc.ML_LOG_CONTEXT: ["validation", "validation", "test"],
            sc.ML_LOG_TIME: [1_000_000_123, 2_000_000_000, 3_000_000_000],
        }
    }
    parts = {(p.label, p.context): p for p in step_series(record)}
    assert set(parts) == {
        ("eval_loss", "validation"),
        ("accuracy", "validation"),
        ("accuracy", "test"),
    }
    assert parts[("eval_loss", "validation")].lines == ["100,2,0.25,1000,1000000123"]
    assert parts[("accuracy", "validation")].lines == [",2,0.5,2000,2000000000"]  # no step
    assert parts[("accuracy", "test")].values == [0.75]
    assert not any(k.startswith("ml.log.") for k in record["attributes"])  # not in PROV
