"""What Lightning and the Hugging Face ``Trainer`` log, recorded with no user code.

The PyTorch instrumentation already sees every DataLoader pass, step, backward, optimizer step,
loss and save of a framework's loop. These adapters add what only the framework knows and send
it through the same events (:mod:`provtel.instrumentation.torch.events`) as the manual API, so
it lands on the same passes and steps:

* **Lightning** (``lightning.pytorch`` and ``pytorch_lightning`` 2.x): a ``Callback`` joins every
  ``Trainer``. Values logged with ``self.log`` / ``self.log_dict`` are recorded under the names
  Lightning's loggers get (``name``, or ``name_step`` / ``name_epoch`` when logged both ways):
  step values on their step, epoch values as Lightning reduced them, on their pass. The
  sanity-check validation is not recorded; evaluations of ``fit`` / ``validate`` are
  ``validation``, ``test`` is ``test``. ``save_hyperparameters()`` (``module.hparams``, a
  datamodule's too) and the ``seed_everything`` seed become hyperparameters (the optimizer and
  scheduler of ``configure_optimizers`` are recorded by the torch hooks); checkpoints written by
  ``Trainer.save_checkpoint`` (``ModelCheckpoint``) are ``provml:Model`` files in the checkpoint
  chain (reading them back, ``load_from_checkpoint`` or ``ckpt_path=``, is a torch.load).
* **Hugging Face** ``transformers.Trainer``: a ``TrainerCallback`` joins every ``Trainer``. Its
  training logs are recorded as ``train/<key>`` (``train/loss``, ``train/learning_rate``,
  ``train/grad_norm``, ``train/epoch``, the names HF's TensorBoard/W&B integrations use, so they
  never mix with the per-step ``loss`` series), the results of ``evaluate`` / ``predict`` under
  their own keys (``eval_loss``, ``eval_accuracy`` from ``compute_metrics``, ...) on their
  evaluation pass: ``validation`` for the trainer's ``eval_dataset``, ``test`` for a
  ``test``-prefixed call. ``TrainingArguments`` (the core optimisation settings and every value
  that differs from its default: the rest is given by the recorded transformers version) and
  ``model.config`` (``model.config.*``) become hyperparameters, secrets redacted.
  Weights written by ``save_pretrained`` are recorded by the safetensors/torch.save hooks;
  ``from_pretrained`` of a local folder records the weight files it read.

* **accelerate** (under the HF ``Trainer``): its prepared loaders ask the DataLoader for a batch
  ahead; their own iteration is the pass (each step one batch the training sees).

A framework version without the expected hook point leaves that integration off, saying so in
one log line. An integration is loaded only when the script imports the framework (wrapt
post-import hooks): a script that does not use it pays nothing.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import wrapt

logger = logging.getLogger(__name__)

__all__ = ["install", "uninstall"]

#: module whose import activates an integration -> the function (in this package) installing it
_HOOKS: tuple[tuple[str, str], ...] = (
    ("lightning.pytorch", "lightning:instrument"),
    ("pytorch_lightning", "lightning:instrument"),
    ("transformers.trainer", "hf:instrument_trainer"),
    ("transformers.modeling_utils", "hf:instrument_models"),
    ("accelerate.data_loader", "accelerate:instrument"),
)

_undo: list[Callable[[], None]] = []
_installed = False
_registered = False


def install() -> None:
    """Turn the framework integrations on (each installs when its framework is imported)."""
    global _installed, _registered
    if _installed:
        return
    _installed = True
    if not _registered:
        _registered = True
        for module, integration in _HOOKS:
            wrapt.register_post_import_hook(_loader(integration), module)
        return
    # instrumented again after uninstall(): frameworks imported meanwhile are patched now
    for module, integration in _HOOKS:
        if module in sys.modules:
            _loader(integration)(sys.modules[module])


def uninstall() -> None:
    """Undo every patch the integrations made; the post-import hooks then do nothing."""
    global _installed
    _installed = False
    while _undo:
        try:
            _undo.pop()()
        except Exception:  # a patch that is already gone
            logger.debug("provtel: could not undo a framework patch", exc_info=True)


def _loader(integration: str) -> Callable[[Any], None]:
    def load(module: Any) -> None:
        if not _installed:
            return
        try:
            name, function = integration.split(":")
            adapter = importlib.import_module(f"{__name__}.{name}")
            _undo.extend(getattr(adapter, function)(module))
        except Exception:
            logger.exception(
                "provtel: the %s integration could not be installed and is off; training is "
                "unaffected",
                module.__name__,
            )

    return load
