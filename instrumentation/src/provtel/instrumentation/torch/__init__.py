"""OpenTelemetry instrumentation for PyTorch training scripts, with no code changes.

Run any PyTorch script as ``opentelemetry-instrument python train.py`` with provtel installed and
it is traced as a training run:

* a **run** span (``ml.run``): script, command line, Python, torch and CUDA versions, git commit,
  branch and dirty state, the model (class, parameter count, dtype, device) and every
  hyperparameter found without code changes: the parsed ``argparse`` arguments
  (``ml.hparam.<dest>``), optimizer class and param-group settings
  (``ml.hparam.optimizer.*``, ``optimizer_2`` for a second optimizer), the LR scheduler
  (``ml.hparam.lr_scheduler.*``) and seeds set through torch, ``random`` and numpy
  (``ml.hparam.seed.*``). The run ends at exit with status ERROR and the exception when the
  script failed, called ``sys.exit`` with a non-zero status, or was stopped by a signal;
* a span per **pass over a DataLoader**: ``ml.epoch`` (``ml.context = training``) when a
  backward or optimizer step happened in it, ``ml.evaluation`` otherwise, with the dataset
  (class, length, root path) and the loader's batch size, workers and shuffling;
* **passes from the model's own state** in scripts without a DataLoader (nanoGPT,
  word_language_model): an ``ml.epoch`` for each stretch of training between evaluations, and
  an ``ml.evaluation`` from ``model.eval()`` (or the first loss computed without gradients,
  ``torch.no_grad``/``inference_mode``) to ``model.train()`` or the next training step, one per
  evaluated data (the tensor the targets are sliced from, the ``np.memmap`` file of the batch);
  ``ml.pass.source`` says which kind. An evaluation followed by training is ``validation``; at
  the end one over data validated before is ``validation``, any other ``test``; inside
  ``provtel.context("test")`` it is that;
* **evaluation results**: every ``torch.nn.functional`` loss and ``nn.*Loss`` module computed
  in an evaluation pass, per batch (``ml.step.loss`` of its blocks) and per pass
  (``ml.eval.loss``, the batch-weighted mean, with ``ml.eval.batches`` and ``ml.eval.samples``,
  and an ``eval_loss`` row in the ``ml.log.*`` table); losses on a device are read once per
  pass;
* **logged values** (``provtel.log_metric``, framework integrations) as the ``ml.log.*`` table
  of the open block, pass or run (see :mod:`provtel.instrumentation.torch.events`);
* **step blocks** (``ml.step_block``), children of their pass, each carrying per-step arrays:
  start time, duration, data wait, backward and optimizer time, loss, learning rate, batch
  size, and skipped steps when an AMP ``GradScaler`` is used. A step is one batch when a
  DataLoader pass is active, else one round of optimizer steps (a GAN's optimizers together),
  else (no optimizer) one backward. Losses on a device are kept as detached tensors and read
  once per block, so no device synchronisation is added per step (CPU losses are read at once);
  on CUDA the phase times come from CUDA events read once per block;
* **checkpoints**: ``torch.save`` / ``torch.load`` and ``safetensors.torch`` (``save_file``,
  ``load_file``, ``save_model``, ``load_model``) as ``ml.checkpoint.save`` / ``.load`` spans with
  path, size and a SHA-256 digest computed on a background thread (saves to buffers are recorded
  without a path); a dict given to ``torch.save`` adds its scalar and configuration entries
  (``ml.checkpoint.entry.iter_num``, ``…best_val_loss``, ``…config.*``, secrets redacted);
* ``torch.distributed.autograd.backward`` and ``DistributedOptimizer.step`` (RPC training) are
  backward and optimizer steps;
* live **metrics** when a metric backend other than the PROV document is configured:
  ``ml.step.duration`` (a histogram of each block's mean step time), ``ml.steps``,
  ``ml.samples``, ``ml.loss``, ``ml.throughput``, recorded once per block (every step's values
  are in the block's arrays).

DataLoader worker processes record nothing. A hook that fails logs once and switches itself
off; the training is never affected (results are bit-identical with and without it).

Configuration (environment variables, or ``opentelemetry-instrument`` flags):

* ``OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS`` (1000), ``OTEL_PYTHON_PROVTEL_TORCH_BLOCK_SECONDS``
  (1): a block ends after this many steps or seconds, whichever first, and at the end of
  its pass; a block that has seen no step end for half a second (or the block time, if
  shorter) is handed over by a background thread, so a process killed during a pause keeps
  every step that ended about a second before;
* ``OTEL_PYTHON_PROVTEL_TORCH_CHECKPOINT_DIGEST`` (true): hash checkpoint files;
* ``OTEL_PYTHON_PROVTEL_TORCH_CUDA_EVENTS`` (true): CUDA-event phase times on GPUs;
* ``OTEL_PYTHON_PROVTEL_TORCH_LIVE_METRICS`` (unset: when ``OTEL_METRICS_EXPORTER`` names a
  backend other than ``prov``/``none``, or ``instrument(meter_provider=...)``): live metrics.

Disable it with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch``. In code::

    from provtel.instrumentation.torch import TorchInstrumentor
    TorchInstrumentor().instrument()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provtel.instrumentation.torch.instrumentor import TorchInstrumentor

__all__ = ["TorchInstrumentor"]


def __getattr__(name: str) -> Any:
    # Lazy: the launcher of ``opentelemetry-instrument`` imports this package only to read
    # :mod:`.environment_variables`; the instrumentor (tracker, hooks, wrapt ...) loads when used.
    if name == "TorchInstrumentor":
        from provtel.instrumentation.torch.instrumentor import TorchInstrumentor

        return TorchInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
