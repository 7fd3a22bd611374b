"""Hugging Face ``transformers`` (``Trainer``, ``PreTrainedModel``) as torch state-machine events.

Hook points, all public: a ``TrainerCallback`` added to every ``Trainer`` with
``Trainer.add_callback`` (``on_train_begin``, ``on_log``, ``on_evaluate``, ``on_predict``),
``Trainer.evaluate`` / ``Trainer.predict`` around each evaluation (its dataset decides
validation or test), ``TrainingArguments.to_dict()`` and ``model.config.to_dict()`` for the
configuration, ``PreTrainedModel.from_pretrained`` for the weights a local folder gave the
model (``save_pretrained`` writes them through the safetensors / torch.save hooks).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import numbers
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from provtel.instrumentation.torch import events
from provtel.instrumentation.torch._guard import Guard

logger = logging.getLogger(__name__)

_CALLBACK_HOOKS = ("on_train_begin", "on_log", "on_evaluate", "on_predict")
TRAINING, VALIDATION, TEST = "training", "validation", "test"
#: training logs are recorded under HF's logger names (``rewrite_logs``: ``train/loss``)
TRAIN_PREFIX = "train/"

Undo = Callable[[], None]


def _off(what: str, missing: list[str]) -> list[Undo]:
    transformers = sys.modules.get("transformers")
    logger.warning(
        "provtel: transformers %s has no %s; the Hugging Face %s integration is off",
        getattr(transformers, "__version__", "?"),
        ", ".join(missing),
        what,
    )
    return []


def instrument_trainer(module: Any) -> list[Undo]:
    """Patch ``transformers.trainer``; returns how to undo it (empty: integration off)."""
    trainer_class = getattr(module, "Trainer", None)
    callback_class = getattr(module, "TrainerCallback", None)  # trainer.py imports it
    missing = [] if trainer_class is not None else ["Trainer"]
    if callback_class is None:
        missing.append("TrainerCallback")
    if not missing:
        missing += [
            f"Trainer.{m}"
            for m in ("add_callback", "evaluate", "predict")
            if not hasattr(trainer_class, m)
        ]
        missing += [
            f"TrainerCallback.{h}" for h in _CALLBACK_HOOKS if not hasattr(callback_class, h)
        ]
    if missing or trainer_class is None or callback_class is None:
        return _off("Trainer", missing)
    state = _TrainerState()
    callback = _callback_type(callback_class, state)
    undo: list[Undo] = []

    def wrap(owner: Any, name: str, wrapper: Any) -> None:
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        undo.append(lambda: unwrap(owner, name))

    wrap(trainer_class, "__init__", _trainer_init(callback))
    wrap(trainer_class, "evaluate", state.evaluation_wrapper("eval_dataset", "eval"))
    wrap(trainer_class, "predict", state.evaluation_wrapper("test_dataset", "test"))
    logger.debug("provtel: Hugging Face Trainer integration on")
    return undo


def instrument_models(module: Any) -> list[Undo]:
    """Patch ``transformers.modeling_utils``: ``PreTrainedModel.from_pretrained``."""
    model_class = getattr(module, "PreTrainedModel", None)
    if not hasattr(model_class, "from_pretrained"):
        return _off("from_pretrained", ["PreTrainedModel.from_pretrained"])
    wrapt.wrap_function_wrapper(model_class, "from_pretrained", _from_pretrained())
    return [lambda: unwrap(model_class, "from_pretrained")]


class _TrainerState:
    """Which evaluation is running and which trainers' configuration is recorded."""

    def __init__(self) -> None:
        # contexts of the Trainer.evaluate / predict calls running (innermost last)
        self.evaluations: list[str | None] = []
        self.configured: set[int] = set()

    def configuration(self, trainer: Any, model: Any = None) -> None:
        """``TrainingArguments`` and the model's config, once per trainer."""
        if id(trainer) in self.configured or not events.active():
            return
        self.configured.add(id(trainer))
        args = getattr(trainer, "args", None)
        if args is not None and hasattr(args, "to_dict"):
            events.params(training_arguments(args), "transformers.TrainingArguments")
        model = model if model is not None else getattr(trainer, "model", None)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            events.params(config.to_dict(), "transformers.PretrainedConfig", "model.config.")

    def evaluation_wrapper(self, dataset_argument: str, default_prefix: str) -> Any:
        guard = Guard(f"Trainer.{'evaluate' if default_prefix == 'eval' else 'predict'}")

        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            bracket = False
            if guard.ok and events.active():
                try:
                    self.configuration(instance)
                    given = args[0] if args else kwargs.get(dataset_argument)
                    prefix = kwargs.get("metric_key_prefix") or (
                        args[2] if len(args) > 2 else default_prefix
                    )
                    dataset, context = _evaluated(instance, given, str(prefix))
                    if not isinstance(dataset, Mapping):  # several datasets: one call each
                        events.begin_evaluation(context, dataset)
                        bracket = True
                        self.evaluations.append(context)
                except Exception:
                    guard.fail()
            if not bracket:
                return wrapped(*args, **kwargs)
            try:
                return wrapped(*args, **kwargs)
            finally:
                self.evaluations.pop()
                try:
                    events.end_evaluation()
                except Exception:
                    guard.fail()

        return wrapper


#: TrainingArguments always recorded, default or not: what decides the optimisation
CORE_ARGUMENTS = (
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "optim",
    "seed",
    "eval_strategy",
    "save_strategy",
)


def training_arguments(args: Any) -> dict[str, Any]:
    """``args.to_dict()`` (HF already hides ``*_token`` values) reduced to the core settings
    and every value that differs from its default: a default is given by the recorded
    transformers version, and the 100-odd fields of ``TrainingArguments`` would mostly repeat
    it."""
    values = args.to_dict()
    fields = dataclasses.fields(args) if dataclasses.is_dataclass(args) else ()
    defaults = {f.name: _default(f) for f in fields}
    return {
        k: v
        for k, v in values.items()
        if k in CORE_ARGUMENTS or k not in defaults or _plain(defaults[k]) != v
    }


def _default(field: Any) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        try:
            return field.default_factory()
        except Exception:
            return dataclasses.MISSING
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _evaluated(trainer: Any, given: Any, prefix: str) -> tuple[Any, str | None]:
    """The dataset an evaluate/predict call runs on, and its context (None: let the state
    machine decide from what was evaluated before)."""
    own = getattr(trainer, "eval_dataset", None)
    dataset = given if given is not None else own
    if isinstance(dataset, str) and isinstance(own, Mapping):
        dataset = own.get(dataset)
    if prefix.startswith("test"):
        return dataset, TEST
    if dataset is own or (isinstance(own, Mapping) and any(dataset is v for v in own.values())):
        return dataset, VALIDATION  # the trainer's eval_dataset: what it validates on
    return dataset, None


def _numbers(values: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    out = []
    for key, value in (values or {}).items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out.append((str(key), float(value)))
    return out


def _evaluation_results(metrics: Mapping[str, Any] | None, step: int, state: _TrainerState) -> None:
    """``evaluate`` / ``predict`` results on their evaluation pass, at HF's step (its
    ``log_history``'s), in the evaluation's context when the call decided it; the training
    ``epoch`` HF adds to them is the pass's epoch already."""
    context = state.evaluations[-1] if state.evaluations else None
    for name, value in _numbers(metrics):
        if name != "epoch":
            events.log(name, value, step, context)


def _callback_type(base: type, state: _TrainerState) -> type:
    """A ``TrainerCallback`` subclass that reports to ``state``'s events."""
    guard = Guard("Hugging Face TrainerCallback")

    def hook(method: Callable[..., None]) -> Callable[..., None]:
        def run(self: Any, args: Any, trainer_state: Any, control: Any, **kwargs: Any) -> None:
            if not guard.ok:
                return
            try:
                method(self, trainer_state, **kwargs)
            except Exception:
                guard.fail()

        run.__name__ = method.__name__
        return run

    @hook
    def on_train_begin(self: Any, trainer_state: Any, **kwargs: Any) -> None:
        trainer = self.trainer()
        if trainer is not None:
            state.configuration(trainer, kwargs.get("model"))

    @hook
    def on_log(self: Any, trainer_state: Any, **kwargs: Any) -> None:
        if state.evaluations:
            return  # recorded from on_evaluate / on_predict, with their evaluation
        for name, value in _numbers(kwargs.get("logs")):
            # HF's logger names (TensorBoard, W&B): apart from the per-step loss series
            events.log(TRAIN_PREFIX + name, value, trainer_state.global_step, TRAINING)

    @hook
    def on_evaluate(self: Any, trainer_state: Any, **kwargs: Any) -> None:
        _evaluation_results(kwargs.get("metrics"), trainer_state.global_step, state)

    @hook
    def on_predict(self: Any, trainer_state: Any, **kwargs: Any) -> None:
        _evaluation_results(kwargs.get("metrics"), trainer_state.global_step, state)

    def _init(self: Any, trainer: Any) -> None:
        self.trainer = weakref.ref(trainer)

    namespace: dict[str, Any] = {
        "__doc__": "provtel: records what this Trainer logs (added with no user code).",
        "__module__": __name__,
        "__init__": _init,
        "on_train_begin": on_train_begin,
        "on_log": on_log,
        "on_evaluate": on_evaluate,
        "on_predict": on_predict,
    }
    return type("ProvtelTrainerCallback", (base,), namespace)


def _trainer_init(callback: type) -> Any:
    guard = Guard("Hugging Face Trainer")

    def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        if guard.ok:
            try:
                instance.add_callback(callback(instance))
            except Exception:
                guard.fail()
        return result

    return init


def _from_pretrained() -> Any:
    """The weight files of a local folder a model was loaded from: ``provml:Model`` files read
    (the run's own ``save_pretrained`` output is then used by the model it loaded)."""
    guard = Guard("Hugging Face from_pretrained")

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        if guard.ok:
            try:
                given = args[0] if args else kwargs.get("pretrained_model_name_or_path")
                if isinstance(given, (str, os.PathLike)) and os.path.isdir(given):
                    for path in _weight_files(os.path.abspath(os.fspath(given))):
                        events.artifact(path, "model", "load")
            except Exception:
                guard.fail()
        return result

    return wrapper


def _weight_files(folder: str) -> list[str]:
    """The weights in a ``save_pretrained`` folder: safetensors files, else torch ``.bin``."""
    names = sorted(os.listdir(folder))
    found = [n for n in names if n.endswith(".safetensors")]
    if not found:
        found = [n for n in names if n.endswith(".bin") and "model" in n]
    return [os.path.join(folder, n) for n in found if os.path.isfile(os.path.join(folder, n))]
