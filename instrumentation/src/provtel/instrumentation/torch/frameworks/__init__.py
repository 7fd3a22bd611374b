"""What Lightning and the Hugging Face ``Trainer`` log, recorded with no user code.

The PyTorch instrumentation already sees every DataLoader pass, step, backward, optimizer step
and save of a framework's loop. These adapters add what only the framework knows, and feed it
to the same pass/step events as the plain-torch hooks:

* **Lightning** (``lightning.pytorch`` and ``pytorch_lightning`` 2.x): a ``Callback`` joins every
  ``Trainer``. Values logged with ``self.log`` / ``self.log_dict`` are recorded against their
  pass and step under the names Lightning's loggers get (``name``, or ``name_step`` /
  ``name_epoch`` when logged both ways): step values when they are logged, epoch values as
  Lightning reduced them. The sanity-check validation is not recorded; ``validate``/``fit``
  evaluations are ``validation``, ``trainer.test`` is ``test``. ``save_hyperparameters()``
  (``module.hparams``, a datamodule's too) and the ``seed_everything`` seed become
  hyperparameters; checkpoints written by ``Trainer.save_checkpoint`` (``ModelCheckpoint``) and
  loaded through the strategy or ``load_from_checkpoint`` are model artifacts with their path.
* **Hugging Face** ``transformers.Trainer``: a ``TrainerCallback`` joins every ``Trainer``. Its
  logs (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``, the final ``train_*``) are
  recorded in the training context, ``Trainer.evaluate`` results (``eval_loss``, the
  ``compute_metrics`` values, ...) on their evaluation pass, ``validation`` for the trainer's
  ``eval_dataset``; ``TrainingArguments`` (secrets redacted) and ``model.config`` become
  hyperparameters; ``save_pretrained`` / ``from_pretrained`` of local folders are model
  artifacts.

A framework version without the expected hook point leaves that integration off, saying so in
one log line. Each integration is loaded only when the script imports the framework (wrapt
post-import hooks), so a script that does not use it pays nothing.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import wrapt

from provtel.instrumentation.torch.frameworks.events import Events

logger = logging.getLogger(__name__)

__all__ = ["Events", "install", "uninstall"]

#: module whose import activates an integration -> the function (in this package) installing it
_HOOKS: tuple[tuple[str, str], ...] = (
    ("lightning.pytorch", "lightning:instrument"),
    ("pytorch_lightning", "lightning:instrument"),
    ("transformers.trainer", "hf:instrument_trainer"),
    ("transformers.modeling_utils", "hf:instrument_models"),
)

_undo: list[Callable[[], None]] = []
_installed = False


def install(events: Callable[[], Events | None]) -> None:
    """Register the framework integrations; ``events()`` gives the event sink (None: off)."""
    global _installed
    if _installed:
        return
    _installed = True
    for module, integration in _HOOKS:
        wrapt.register_post_import_hook(_loader(integration, events), module)


def uninstall() -> None:
    """Undo every patch the integrations made (post-import hooks then do nothing)."""
    global _installed
    _installed = False
    while _undo:
        try:
            _undo.pop()()
        except Exception:  # a patch that is already gone
            logger.debug("provtel: could not undo a framework patch", exc_info=True)


def _loader(integration: str, events: Callable[[], Events | None]) -> Callable[[Any], None]:
    def load(module: Any) -> None:
        if not _installed:
            return
        try:
            name, function = integration.split(":")
            adapter = importlib.import_module(f"{__name__}.{name}")
            _undo.extend(getattr(adapter, function)(module, events))
        except Exception:
            logger.exception(
                "provtel: the %s integration could not be installed and is off; training is "
                "unaffected",
                module.__name__,
            )

    return load
