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
ML_FRAMEWORK_NAME = attribute(
    "ml.framework.name", "string", "", "Training framework of the run (`torch`)."
)
ML_FRAMEWORK_VERSION = attribute(
    "ml.framework.version", "string", "", "Version of the training framework."
)
ML_CUDA_VERSION = attribute(
    "ml.cuda.version",
    "string",
    "",
    "CUDA version the framework was built with (absent on CPU builds).",
)
ML_VCS_DIRTY = attribute(
    "ml.vcs.dirty",
    "boolean",
    "",
    "True when tracked files of the script's git repository differ from `vcs.ref.head.revision`.",
)
VCS_REF_HEAD_REVISION = attribute(
    "vcs.ref.head.revision", "string", "", "OpenTelemetry `vcs.ref.head.revision`: the git commit."
)
VCS_REF_HEAD_NAME = attribute(
    "vcs.ref.head.name", "string", "", "OpenTelemetry `vcs.ref.head.name`: the git branch."
)
VCS_REPOSITORY_URL_FULL = attribute(
    "vcs.repository.url.full",
    "string",
    "",
    "OpenTelemetry `vcs.repository.url.full`: the `origin` remote, credentials removed.",
)
PROCESS_COMMAND_ARGS = attribute(
    "process.command_args",
    "string[]",
    "",
    "OpenTelemetry `process.command_args`: the command line.",
)
PROCESS_RUNTIME_NAME = attribute(
    "process.runtime.name", "string", "", "OpenTelemetry `process.runtime.name` (`cpython`)."
)
PROCESS_RUNTIME_VERSION = attribute(
    "process.runtime.version", "string", "", "OpenTelemetry `process.runtime.version`."
)
ML_PASS_INDEX = attribute(
    "ml.pass.index", "int", "{pass}", "Index of the pass over a data loader within its context."
)
ML_PASS_BATCHES = attribute(
    "ml.pass.batches", "int", "{batch}", "Batches fetched from the data loader during the pass."
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
ML_STEP_SKIPPED = attribute(
    "ml.step.skipped",
    "int[]",
    "1",
    "1 when the step's optimizer step was skipped (AMP GradScaler found inf/NaN gradients), "
    "else 0; present only in runs that use a GradScaler.",
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
    ML_STEP_SKIPPED,
)

# -- values logged by user code, frameworks and loss hooks: a columnar table on one span -------
ML_LOG_NAME = attribute(
    "ml.log.name",
    "string[]",
    "",
    "Name of each value logged during the activity (`provtel.log_metric`, frameworks, the "
    "evaluation summary `eval_loss`); the `ml.log.*` arrays are parallel, one element per value.",
)
ML_LOG_VALUE = attribute("ml.log.value", "double[]", "1", "Each logged value.")
ML_LOG_STEP = attribute(
    "ml.log.step", "int[]", "{step}", "Step of each logged value (-1: none given)."
)
ML_LOG_CONTEXT = attribute(
    "ml.log.context",
    "string[]",
    "",
    "Context of each logged value (`training`, `validation`, `test` or a user context); "
    "becomes the series' `yprov:context`.",
)
ML_LOG_TIME = attribute(
    "ml.log.time", "int[]", "ns", "When each value was logged, nanoseconds since the Unix epoch."
)

#: The parallel arrays of logged values, in the order of a logged row.
LOG_COLUMNS: tuple[str, ...] = (ML_LOG_NAME, ML_LOG_VALUE, ML_LOG_STEP, ML_LOG_CONTEXT, ML_LOG_TIME)

# -- evaluation passes: losses computed while the model is evaluated -----------------------------
ML_EVAL_LOSS = attribute(
    "ml.eval.loss",
    "double",
    "1",
    "Batch-weighted mean of the losses computed during an evaluation pass: "
    "sum(loss_i * n_i) / sum(n_i), n_i the first dimension of the loss's input.",
)
ML_EVAL_BATCHES = attribute(
    "ml.eval.batches", "int", "{batch}", "Losses (batches) computed during an evaluation pass."
)
ML_EVAL_SAMPLES = attribute(
    "ml.eval.samples", "int", "{sample}", "Sum of the weights n_i of `ml.eval.loss`."
)
ML_PASS_SOURCE = attribute(
    "ml.pass.source",
    "string",
    "",
    "What delimited the pass: `dataloader` (a DataLoader iteration), `model` (train/eval mode "
    "and grad mode, for hand-batched scripts) or `framework` (an integration).",
)

# -- inputs -------------------------------------------------------------------------------------
#: Prefix of :data:`ML_HPARAM_PREFIX` attributes.
HPARAM_PREFIX = "ml.hparam."
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
ML_DATALOADER_PERSISTENT_WORKERS = attribute(
    "ml.dataloader.persistent_workers",
    "boolean",
    "",
    "Whether the loader keeps its worker processes between passes.",
)
ML_MODEL_NAME = attribute(
    "ml.model.name", "string", "", "Name of the model (defaults to its class)."
)
ML_MODEL_CLASS = attribute("ml.model.class", "string", "", "Class of the model.")
ML_MODEL_PARAMETERS = attribute(
    "ml.model.parameters", "int", "{parameter}", "Number of parameters."
)
ML_MODEL_DTYPE = attribute(
    "ml.model.dtype", "string", "", "Data type of the model's parameters (`float32`, ...)."
)
ML_MODEL_DEVICE = attribute(
    "ml.model.device", "string", "", "Device the model's parameters are on (`cpu`, `cuda:0`)."
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
ML_CHECKPOINT_ENTRY_PREFIX = attribute(
    "ml.checkpoint.entry.<key>",
    "any",
    "",
    "A scalar entry of a dict saved with `torch.save` (`iter_num`, `best_val_loss`; nested "
    "configuration as `config.<key>`), secrets redacted; on the checkpoint's `provml:Model`.",
)
#: Prefix of :data:`ML_CHECKPOINT_ENTRY_PREFIX` attributes.
CHECKPOINT_ENTRY_PREFIX = "ml.checkpoint.entry."
ML_ARTIFACT_KIND = attribute(
    "ml.artifact.kind",
    "string",
    "",
    "What a saved or loaded file is: `model` (the default for torch.save and safetensors), "
    "`dataset` or `artifact`; decides its PROV type.",
)
ML_ARTIFACT_FORMAT = attribute(
    "ml.artifact.format",
    "string",
    "",
    "How the file was written or read: `torch`, `safetensors`, or `file` (`provtel.log_artifact`).",
)


def checkpoint_entry(key: str) -> str:
    """The attribute name of a checkpoint dict entry (``ml.checkpoint.entry.<key>``)."""
    return CHECKPOINT_ENTRY_PREFIX + key


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

# -- distributed jobs (resource attributes; no OpenTelemetry convention covers HPC jobs) -------
ML_JOB_ID = attribute(
    "ml.job.id",
    "string",
    "",
    "Identity of the job all ranks share: SLURM job (and step) id, torchrun run id, MPI job id.",
)
ML_JOB_SCHEDULER = attribute(
    "ml.job.scheduler",
    "string",
    "",
    "Where the job identity came from: `slurm`, `torchrun`, `mpi`.",
)
ML_RANK = attribute("ml.rank", "int", "{rank}", "Global rank of this process in the job.")
ML_LOCAL_RANK = attribute("ml.local_rank", "int", "{rank}", "Rank of this process on its node.")
ML_WORLD_SIZE = attribute("ml.world_size", "int", "{rank}", "Number of ranks in the job.")
ML_NODE_RANK = attribute(
    "ml.node.rank", "int", "{node}", "Index of this process's node in the job."
)
