"""Span names used by provtel's instrumentation. The exporter reads `ml.activity`, not these."""

from __future__ import annotations

from provtel.semconv._registry import span_name

RUN = span_name("ml.run", "The whole training run (root span).")
EPOCH = span_name("ml.epoch", "One training pass over a data loader.")
EVALUATION = span_name(
    "ml.evaluation", "One evaluation pass (validation or test) over a data loader."
)
STEP_BLOCK = span_name("ml.step_block", "A block of consecutive steps with per-step arrays.")
CHECKPOINT_SAVE = span_name("ml.checkpoint.save", "Saving a checkpoint (torch.save).")
CHECKPOINT_LOAD = span_name("ml.checkpoint.load", "Loading a checkpoint (torch.load).")
LOG = span_name(
    "ml.log",
    "Values logged (or parameters, artifacts) through provtel's API without the PyTorch "
    "instrumentation: a short span carrying the `ml.log.*` table.",
)
ARTIFACT_SAVE = span_name(
    "ml.artifact.save",
    "A file saved and recorded with `provtel.log_artifact` or a framework integration.",
)
ARTIFACT_LOAD = span_name(
    "ml.artifact.load",
    'A file read and recorded with `provtel.log_artifact(..., operation="load")`.',
)
