"""Metric names emitted by provtel's instrumentation (OTel metrics, shown live in Prometheus)."""

from __future__ import annotations

from provtel.semconv._registry import metric

ML_STEP_DURATION = metric("ml.step.duration", "histogram", "s", "Duration of training steps.")
ML_STEPS = metric("ml.steps", "counter", "{step}", "Training steps taken.")
ML_SAMPLES = metric("ml.samples", "counter", "{sample}", "Training samples processed.")
ML_LOSS = metric("ml.loss", "gauge", "1", "Loss of the latest step, by `ml.context`.")
ML_THROUGHPUT = metric(
    "ml.throughput", "gauge", "{sample}/s", "Samples per second over the last block."
)
