"""Values of the `ml.activity` and `ml.context` attributes."""

from __future__ import annotations

RUN = "run"
EPOCH = "epoch"
EVALUATION = "evaluation"
STEP_BLOCK = "step_block"
CHECKPOINT = "checkpoint"

TRAINING = "training"
VALIDATION = "validation"
TEST = "test"
