"""Lightning (``lightning.pytorch`` / ``pytorch_lightning`` 2.x) as torch state-machine events.

Hook points, all public: a ``Callback`` appended to every ``Trainer`` (before its checkpoint
callbacks, which Lightning keeps last), ``LightningModule.log`` (``log_dict`` calls it) for
values logged per step, ``trainer.callback_metrics`` for values Lightning reduced per epoch and
``Trainer.save_checkpoint`` for checkpoint files.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from provtel.instrumentation.torch import events
from provtel.instrumentation.torch._guard import Guard

logger = logging.getLogger(__name__)

#: Lightning's hooks that log per step by default (on_step=True, on_epoch=False); every other
#: hook logs per epoch (its documented "automatic logging" table, fx_validator in 2.x).
_STEP_HOOKS = frozenset(
    {
        "training_step",
        "on_train_batch_start",
        "on_train_batch_end",
        "on_before_backward",
        "backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "optimizer_step",
        "configure_gradient_clipping",
        "clip_gradients",
        "on_before_zero_grad",
        "optimizer_zero_grad",
    }
)
_CALLBACK_HOOKS = (
    "setup",
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_train_epoch_start",
    "on_train_end",
    "on_validation_start",
    "on_validation_end",
    "on_test_start",
    "on_test_end",
)
_TRAINER_ATTRIBUTES = (
    "save_checkpoint",
    "global_step",
    "callback_metrics",
    "sanity_checking",
    "training",
    "validating",
    "testing",
)
TRAINING, VALIDATION, TEST = "training", "validation", "test"

Undo = Callable[[], None]


def instrument(pl: Any) -> list[Undo]:
    """Patch the Lightning package ``pl``; returns how to undo it (empty: integration off)."""
    trainer_class = getattr(pl, "Trainer", None)
    module_class = getattr(pl, "LightningModule", None)
    callback_class = getattr(pl, "Callback", None)
    names = ("Trainer", "LightningModule", "Callback")
    missing = [n for n in names if getattr(pl, n, None) is None]
    if not missing:
        missing += [f"Trainer.{a}" for a in _TRAINER_ATTRIBUTES if not hasattr(trainer_class, a)]
        missing += [f"Callback.{h}" for h in _CALLBACK_HOOKS if not hasattr(callback_class, h)]
        if not hasattr(module_class, "log"):
            missing.append("LightningModule.log")
    if missing or callback_class is None:
        logger.warning(
            "provtel: %s %s has no %s; the Lightning integration is off",
            pl.__name__,
            getattr(pl, "__version__", "?"),
            ", ".join(missing),
        )
        return []
    recorder = _Recorder()
    callback = _callback_type(callback_class, recorder)
    undo: list[Undo] = []

    def wrap(owner: Any, name: str, wrapper: Any) -> None:
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        undo.append(lambda: unwrap(owner, name))

    checkpoint = getattr(getattr(pl, "callbacks", None), "Checkpoint", None)
    wrap(trainer_class, "__init__", _trainer_init(callback, checkpoint))
    wrap(module_class, "log", recorder.log_wrapper())
    wrap(trainer_class, "save_checkpoint", _save_checkpoint())
    logger.debug("provtel: Lightning integration on (%s)", pl.__name__)
    return undo


class _Recorder:
    """Translates Lightning's logging into events: step values at once, epoch values when
    Lightning has reduced them (its ``callback_metrics``)."""

    def __init__(self) -> None:
        # stage -> names (keys of callback_metrics) logged per epoch, in logging order
        self.epoch_values: dict[str, dict[str, None]] = {TRAINING: {}, VALIDATION: {}, TEST: {}}
        self.train_epoch_open = False
        self.torch: Any = None

    # -- values ---------------------------------------------------------------------------
    def log_wrapper(self) -> Any:
        guard = Guard("Lightning self.log")

        def log(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            result = wrapped(*args, **kwargs)
            if guard.ok:
                try:
                    self._logged(instance, *_log_arguments(*args, **kwargs))
                except Exception:
                    guard.fail()
            return result

        return log

    def _logged(
        self, module: Any, name: str, value: Any, on_step: bool | None, on_epoch: bool | None
    ) -> None:
        trainer = getattr(module, "_trainer", None)
        if trainer is None or trainer.sanity_checking or not events.active():
            return
        stage = _stage(trainer)
        if stage is None:
            return
        per_step_hook = getattr(module, "_current_fx_name", None) in _STEP_HOOKS
        step = per_step_hook if on_step is None else on_step
        epoch = (not per_step_hook) if on_epoch is None else on_epoch
        forked = step and epoch
        if epoch:
            self.epoch_values[stage][f"{name}_epoch" if forked else name] = None
        if step:
            scalar = self._scalar(value)
            if scalar is not None:
                events.log(f"{name}_step" if forked else name, scalar, trainer.global_step)

    def _scalar(self, value: Any) -> Any:
        """The value as Lightning keeps it (float32 unless float64), without a device sync:
        a float on CPU, a detached 0-d tensor on a device."""
        torch = self.torch
        if torch is None:
            import torch

            self.torch = torch
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                return None
            value = value.detach().reshape(())
            if value.dtype not in (torch.float32, torch.float64):
                value = value.to(torch.get_default_dtype())
            return value.item() if value.device.type == "cpu" else value
        if isinstance(value, numbers.Number):
            return torch.tensor(value, dtype=torch.get_default_dtype()).item()
        return None  # a torchmetrics Metric: its epoch value is read from callback_metrics

    def flush(self, trainer: Any, stage: str, context: str) -> None:
        """Record the epoch values of ``stage`` as Lightning reduced them."""
        wanted = self.epoch_values[stage]
        if not wanted or not events.active():
            wanted.clear()
            return
        metrics = trainer.callback_metrics
        step = trainer.global_step  # the step Lightning's loggers get for epoch values
        for key in wanted:
            for found, value in _matching(metrics, key):
                scalar = self._scalar(value)
                if scalar is not None:
                    if not isinstance(scalar, float):
                        scalar = scalar.item()  # once per epoch
                    events.log(found, scalar, step, context)
        wanted.clear()


def _matching(metrics: Any, key: str) -> list[tuple[str, Any]]:
    """``key`` in ``callback_metrics``, or its per-dataloader forms (``key/dataloader_idx_N``)."""
    if key in metrics:
        return [(key, metrics[key])]
    prefix = key + "/dataloader_idx_"
    return [(k, v) for k, v in metrics.items() if k.startswith(prefix)]


def _log_arguments(
    name: str,
    value: Any,
    prog_bar: bool = False,
    logger: bool | None = None,
    on_step: bool | None = None,
    on_epoch: bool | None = None,
    *args: Any,
    **kwargs: Any,
) -> tuple[str, Any, bool | None, bool | None]:
    return name, value, on_step, on_epoch


def _stage(trainer: Any) -> str | None:
    if trainer.training:
        return TRAINING
    if trainer.validating:
        return VALIDATION
    if trainer.testing:
        return TEST
    return None


def _dataset(loaders: Any) -> Any:
    """The dataset evaluated (the first loader's when there are several)."""
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    elif isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    return getattr(loaders, "dataset", loaders)


def _callback_type(base: type, recorder: _Recorder) -> type:
    """A ``Callback`` subclass of this Lightning package that reports to ``recorder``."""
    guard = Guard("Lightning callback")

    def hook(method: Callable[..., None]) -> Callable[..., None]:
        def run(self: Any, trainer: Any, *args: Any, **kwargs: Any) -> None:
            if not guard.ok:
                return
            try:
                method(trainer, *args, **kwargs)
            except Exception:
                guard.fail()

        run.__name__ = method.__name__
        return run

    @hook
    def setup(trainer: Any, module: Any, stage: str | None = None) -> None:
        if not events.active():
            return
        events.params(getattr(module, "hparams", None) or {}, "lightning.hparams")
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            events.params(getattr(datamodule, "hparams", None) or {}, "lightning.datamodule")
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything
        if seed is not None and seed.lstrip("-").isdigit():
            events.params({"seed": int(seed)}, "lightning.seed_everything")

    @hook
    def on_sanity_check_start(trainer: Any, module: Any) -> None:
        events.sanity_check(True)

    @hook
    def on_sanity_check_end(trainer: Any, module: Any) -> None:
        events.sanity_check(False)
        for names in recorder.epoch_values.values():
            names.clear()

    @hook
    def on_train_epoch_start(trainer: Any, module: Any) -> None:
        # epoch values of the previous epoch: Lightning reduces them after every callback's
        # on_train_epoch_end (the module's own on_train_epoch_end logs after ours)
        recorder.flush(trainer, TRAINING, TRAINING)

    @hook
    def on_train_end(trainer: Any, module: Any) -> None:
        recorder.flush(trainer, TRAINING, TRAINING)

    @hook
    def on_validation_start(trainer: Any, module: Any) -> None:
        if not trainer.sanity_checking:
            events.begin_evaluation(VALIDATION, _dataset(trainer.val_dataloaders))

    @hook
    def on_validation_end(trainer: Any, module: Any) -> None:
        if trainer.sanity_checking:
            return
        recorder.flush(trainer, VALIDATION, VALIDATION)
        events.end_evaluation()

    @hook
    def on_test_start(trainer: Any, module: Any) -> None:
        events.begin_evaluation(TEST, _dataset(trainer.test_dataloaders))

    @hook
    def on_test_end(trainer: Any, module: Any) -> None:
        recorder.flush(trainer, TEST, TEST)
        events.end_evaluation()

    namespace: dict[str, Any] = {
        "__doc__": "provtel: records what this Trainer logs (added with no user code).",
        "__module__": __name__,
        "setup": setup,
        "on_sanity_check_start": on_sanity_check_start,
        "on_sanity_check_end": on_sanity_check_end,
        "on_train_epoch_start": on_train_epoch_start,
        "on_train_end": on_train_end,
        "on_validation_start": on_validation_start,
        "on_validation_end": on_validation_end,
        "on_test_start": on_test_start,
        "on_test_end": on_test_end,
    }
    return type("ProvtelCallback", (base,), namespace)


def _trainer_init(callback: type, checkpoint: type | None) -> Any:
    guard = Guard("Lightning Trainer")

    def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        if guard.ok:
            try:
                callbacks = instance.callbacks
                if not any(isinstance(c, callback) for c in callbacks):
                    # before the checkpoint callbacks: our on_validation_end runs before a save
                    kind = checkpoint or ()
                    first = next(
                        (i for i, c in enumerate(callbacks) if isinstance(c, kind)), len(callbacks)
                    )
                    callbacks.insert(first, callback())
            except Exception:
                guard.fail()
        return result

    return init


def _save_checkpoint() -> Any:
    """A checkpoint file written by Lightning: a ``provml:Model`` artifact with its path
    (Lightning hands ``torch.save`` a buffer and writes the bytes itself; loads go through
    ``torch.load`` of the open file, which the torch hooks record with its path)."""
    guard = Guard("Lightning save_checkpoint")

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not guard.ok:
            return wrapped(*args, **kwargs)
        with events.framework_save():  # its torch.save into a buffer is this file
            result = wrapped(*args, **kwargs)
        if guard.ok:
            try:
                given = args[0] if args else None
                path = _local_path(given or kwargs.get("filepath") or kwargs.get("checkpoint_path"))
                if path is not None:
                    events.artifact(path, "model", "save")
            except Exception:
                guard.fail()
        return result

    return wrapper


def _local_path(value: Any) -> str | None:
    if not isinstance(value, (str, os.PathLike)):
        return None
    path = os.fspath(value)
    if "://" in path and not path.startswith("file://"):
        return None  # remote storage (fsspec): no local file to describe
    return os.path.abspath(path.removeprefix("file://"))
