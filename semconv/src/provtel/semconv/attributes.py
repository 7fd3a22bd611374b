"""Attribute names set on spans and resources and read by the PROV exporter."""

from __future__ import annotations

from provtel.semconv._registry import attribute

# -- what kind of activity a span is -----------------------------------------------------------
ML_ACTIVITY = attribute(
    "ml.activity",
    "string",
    "",
    "Role of the span: `run`, `epoch`, `evaluation`, `step_block`, `checkpoint`.",
)
ML_CONTEXT = attribute(
    "ml.context",
    "string",
    "",
    "ML phase the activity belongs to (`training`, `validation`, `test`); becomes `yprov:context`.",
)
ML_RUN_NAME = attribute(
    "ml.run.name", "string", "", "Name of the run (defaults to the script name)."
)
ML_RUN_SCRIPT = attribute("ml.run.script", "string", "", "Path of the training script.")
ML_EPOCH = attribute(
    "ml.epoch", "int", "{epoch}", "Index of the epoch (0-based) a pass or block is in."
)
ML_PASS_INDEX = attribute(
    "ml.pass.index", "int", "{pass}", "Index of the pass over a data loader within its context."
)

# -- step blocks: per-step arrays on one span --------------------------------------------------
ML_STEP_FIRST = attribute(
    "ml.step.first", "int", "{step}", "Global index of the first step in the block."
)
ML_STEP_COUNT = attribute("ml.step.count", "int", "{step}", "Number of steps in the block.")
ML_STEP_START = attribute(
    "ml.step.start_time", "int[]", "ns", "Start of each step, nanoseconds since the Unix epoch."
)
ML_STEP_DURATION = attribute(
    "ml.step.duration",
    "double[]",
    "s",
    "Wall time of each step, from start to the start of the next.",
)
ML_STEP_DATA_WAIT = attribute(
    "ml.step.data_wait",
    "double[]",
    "s",
    "Time each step waited for its batch from the data loader.",
)
ML_STEP_FORWARD = attribute("ml.step.forward", "double[]", "s", "Forward time of each step.")
ML_STEP_BACKWARD = attribute("ml.step.backward", "double[]", "s", "Backward time of each step.")
ML_STEP_OPTIMIZER = attribute(
    "ml.step.optimizer", "double[]", "s", "Optimizer step time of each step."
)
ML_STEP_LOSS = attribute("ml.step.loss", "double[]", "1", "Loss of each step.")
ML_STEP_LEARNING_RATE = attribute(
    "ml.step.learning_rate", "double[]", "1", "Learning rate of each step (first param group)."
)
ML_STEP_BATCH_SIZE = attribute(
    "ml.step.batch_size", "int[]", "{sample}", "Batch size of each step."
)

#: The per-step array attributes, each of which becomes a metric series in PROV.
STEP_SERIES: tuple[str, ...] = (
    ML_STEP_DURATION,
    ML_STEP_DATA_WAIT,
    ML_STEP_FORWARD,
    ML_STEP_BACKWARD,
    ML_STEP_OPTIMIZER,
    ML_STEP_LOSS,
    ML_STEP_LEARNING_RATE,
    ML_STEP_BATCH_SIZE,
)

# -- inputs -------------------------------------------------------------------------------------
ML_HPARAM_PREFIX = attribute(
    "ml.hparam.<name>",
    "any",
    "",
    "A hyperparameter (optimizer setting, scheduler, seed, argparse argument, ...); "
    "becomes a `provml:HyperParameter` entity used by the activity.",
)
ML_DATASET_NAME = attribute("ml.dataset.name", "string", "", "Name of the dataset a pass reads.")
ML_DATASET_CLASS = attribute("ml.dataset.class", "string", "", "Class of the dataset object.")
ML_DATASET_SIZE = attribute(
    "ml.dataset.size", "int", "{sample}", "Number of samples in the dataset."
)
ML_DATASET_PATH = attribute(
    "ml.dataset.path", "string", "", "Root path or URI of the dataset, if any."
)
ML_DATASET_DIGEST = attribute(
    "ml.dataset.digest", "string", "", "Content digest of the dataset, `sha256:<hex>`."
)
ML_DATALOADER_BATCH_SIZE = attribute(
    "ml.dataloader.batch_size", "int", "{sample}", "Batch size of the data loader."
)
ML_DATALOADER_NUM_WORKERS = attribute(
    "ml.dataloader.num_workers", "int", "{worker}", "Worker processes of the data loader."
)
ML_DATALOADER_SHUFFLE = attribute(
    "ml.dataloader.shuffle", "boolean", "", "Whether the loader shuffles."
)
ML_MODEL_NAME = attribute(
    "ml.model.name", "string", "", "Name of the model (defaults to its class)."
)
ML_MODEL_CLASS = attribute("ml.model.class", "string", "", "Class of the model.")
ML_MODEL_PARAMETERS = attribute(
    "ml.model.parameters", "int", "{parameter}", "Number of parameters."
)

# -- checkpoints (with OpenTelemetry's file.path / file.size) -------------------------------------
ML_CHECKPOINT_OPERATION = attribute("ml.checkpoint.operation", "string", "", "`save` or `load`.")
ML_CHECKPOINT_DIGEST = attribute(
    "ml.checkpoint.digest", "string", "", "Content digest of the checkpoint file, `sha256:<hex>`."
)
ML_CHECKPOINT_IN_MEMORY = attribute(
    "ml.checkpoint.in_memory",
    "boolean",
    "",
    "True when saved to or loaded from a buffer, not a file.",
)
FILE_PATH = attribute(
    "file.path", "string", "", "OpenTelemetry `file.path`: the checkpoint's path."
)
FILE_SIZE = attribute("file.size", "int", "By", "OpenTelemetry `file.size`: the checkpoint's size.")

# -- exceptions (OpenTelemetry's, read from span events) ----------------------------------------
EXCEPTION_TYPE = attribute(
    "exception.type", "string", "", "OpenTelemetry exception type (span event)."
)
EXCEPTION_MESSAGE = attribute(
    "exception.message", "string", "", "OpenTelemetry exception message (span event)."
)
