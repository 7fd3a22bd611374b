"""The Lightning and Hugging Face adapters in-process, with the event interface recorded.

The adapters are thin: they translate framework hooks into ``provtel.instrumentation.torch.events``
calls. These tests replace those event functions by a recorder and drive the adapters the way the
frameworks do (a fake ``trainer`` where the framework would pass one), so each rule is checked in
isolation; the real frameworks under ``opentelemetry-instrument`` are in
``tests/integration/test_frameworks.py``.
"""

from __future__ import annotations

import logging
import types
from typing import Any

import pytest
import torch

from provtel.instrumentation.torch import events
from provtel.instrumentation.torch.frameworks import hf, lightning


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The event calls the adapters make, in order."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(events, "active", lambda: True)
    monkeypatch.setattr(
        events,
        "log",
        lambda name, value, step=None, context=None: calls.append(
            ("log", name, value, step, context)
        ),
    )
    monkeypatch.setattr(
        events,
        "params",
        lambda mapping, source=None, prefix="": calls.append(
            ("params", dict(mapping), source, prefix)
        ),
    )
    monkeypatch.setattr(
        events,
        "artifact",
        lambda path, kind="model", operation="save", fmt="file": calls.append(
            ("artifact", path, kind, operation)
        ),
    )
    monkeypatch.setattr(
        events,
        "begin_evaluation",
        lambda context=None, dataset=None: calls.append(("begin_evaluation", context, dataset)),
    )
    monkeypatch.setattr(events, "end_evaluation", lambda: calls.append(("end_evaluation",)))
    monkeypatch.setattr(events, "sanity_check", lambda on: calls.append(("sanity_check", on)))
    return calls


# -- a framework version without the hook point: off, one log line ----------------------------


class _Hooks:
    """A callback base class with every hook but ``on_sanity_check_start``."""

    def setup(self) -> None: ...
    def on_sanity_check_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...


class _Trainer:
    save_checkpoint = global_step = callback_metrics = sanity_checking = None
    training = validating = testing = None


def test_lightning_without_a_hook_point_is_off_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pl = types.ModuleType("lightning.pytorch")
    pl.__version__ = "2.99"  # type: ignore[attr-defined]
    pl.Trainer = _Trainer  # type: ignore[attr-defined]
    pl.LightningModule = type("LightningModule", (), {"log": lambda self: None})  # type: ignore[attr-defined]
    pl.Callback = _Hooks  # type: ignore[attr-defined]
    with caplog.at_level(logging.DEBUG, logger="provtel"):
        assert lightning.instrument(pl) == []
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "provtel: lightning.pytorch 2.99 has no Callback.on_sanity_check_start; "
        "the Lightning integration is off"
    )
    assert not hasattr(_Trainer.save_checkpoint, "__wrapped__")  # nothing patched


def test_hf_trainer_without_a_hook_point_is_off_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trainer_module = types.ModuleType("transformers.trainer")
    trainer_module.Trainer = type("Trainer", (), {"evaluate": None, "predict": None})  # type: ignore[attr-defined]
    trainer_module.TrainerCallback = type(  # type: ignore[attr-defined]
        "TrainerCallback", (), dict.fromkeys(("on_train_begin", "on_log", "on_evaluate"))
    )
    with caplog.at_level(logging.DEBUG, logger="provtel"):
        assert hf.instrument_trainer(trainer_module) == []
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "has no Trainer.add_callback, TrainerCallback.on_predict;" in record.getMessage()
    assert record.getMessage().endswith("the Hugging Face Trainer integration is off")


# -- Lightning: which logged values are step values, which epoch values ------------------------


def _module(fx: str, *, training: bool = False, validating: bool = False) -> Any:
    trainer = types.SimpleNamespace(
        sanity_checking=False,
        training=training,
        validating=validating,
        testing=False,
        global_step=7,
    )
    return types.SimpleNamespace(_trainer=trainer, _current_fx_name=fx)


def test_lightning_step_values_as_lightning_names_them(recorded: list[tuple[Any, ...]]) -> None:
    recorder = lightning._Recorder()
    step = _module("training_step", training=True)
    recorder._logged(step, "loss", torch.tensor(0.25), None, None)  # default: on_step only
    recorder._logged(step, "acc", torch.tensor(0.5, dtype=torch.float64), True, True)  # forked
    recorder._logged(step, "n", 3, None, None)  # a Python int: Lightning keeps float32
    recorder._logged(step, "lr", 0.1, None, None)
    assert recorded == [  # at Lightning's global step, the step its loggers get
        ("log", "loss", 0.25, 7, None),
        ("log", "acc_step", 0.5, 7, None),
        ("log", "n", 3.0, 7, None),
        ("log", "lr", torch.tensor(0.1).item(), 7, None),  # 0.10000000149011612
    ]
    assert recorder.epoch_values["training"] == {"acc_epoch": None}


def test_lightning_epoch_values_are_read_as_lightning_reduced_them(
    recorded: list[tuple[Any, ...]],
) -> None:
    recorder = lightning._Recorder()
    validation = _module("validation_step", validating=True)
    recorder._logged(validation, "val_loss", torch.tensor(9.0), None, None)  # default: epoch
    recorder._logged(validation, "val_acc", torch.tensor(1.0), None, None)
    assert recorded == []  # nothing per batch
    trainer = types.SimpleNamespace(
        global_step=12,
        callback_metrics={
            "val_loss": torch.tensor(2.5),
            "val_acc/dataloader_idx_0": torch.tensor(0.75),
            "val_acc/dataloader_idx_1": torch.tensor(0.5),
            "train_loss": torch.tensor(7.0),  # logged in training: not this evaluation's
        },
    )
    recorder.flush(trainer, "validation", "validation")
    assert recorded == [
        ("log", "val_loss", 2.5, 12, "validation"),
        ("log", "val_acc/dataloader_idx_0", 0.75, 12, "validation"),
        ("log", "val_acc/dataloader_idx_1", 0.5, 12, "validation"),
    ]
    recorder.flush(trainer, "validation", "validation")  # each epoch's names once
    assert len(recorded) == 3


def test_lightning_logs_in_the_sanity_check_are_not_recorded(
    recorded: list[tuple[Any, ...]],
) -> None:
    recorder = lightning._Recorder()
    module = _module("validation_step", validating=True)
    module._trainer.sanity_checking = True
    recorder._logged(module, "val_loss", torch.tensor(1.0), True, None)
    assert recorded == [] and recorder.epoch_values["validation"] == {}


# -- Hugging Face: what an evaluate/predict call evaluates -------------------------------------


def test_hf_evaluation_context_from_the_dataset() -> None:
    own, other = object(), object()
    trainer = types.SimpleNamespace(eval_dataset=own)
    assert hf._evaluated(trainer, None, "eval") == (own, "validation")
    assert hf._evaluated(trainer, own, "eval") == (own, "validation")
    assert hf._evaluated(trainer, other, "eval") == (other, None)  # decided by what follows
    assert hf._evaluated(trainer, other, "test") == (other, "test")
    several = types.SimpleNamespace(eval_dataset={"a": own, "b": other})
    assert hf._evaluated(several, "b", "eval_b") == (other, "validation")


def test_hf_results_and_training_logs(recorded: list[tuple[Any, ...]]) -> None:
    trainer = type("Trainer", (), {})()
    callback = hf._callback_type(object, hf._TrainerState())(trainer)
    state = types.SimpleNamespace(global_step=4)
    callback.on_log(None, state, None, logs={"loss": 0.5, "learning_rate": 1e-3, "epoch": 0.5})
    callback.on_evaluate(
        None, state, None, metrics={"eval_loss": 0.25, "eval_accuracy": 1, "epoch": 1.0}
    )
    callback.on_log(None, state, None, logs={"total_flos": 12.0, "note": "text", "ok": True})
    assert recorded == [
        ("log", "train/loss", 0.5, 4, "training"),
        ("log", "train/learning_rate", 1e-3, 4, "training"),
        ("log", "train/epoch", 0.5, 4, "training"),
        ("log", "eval_loss", 0.25, 4, None),  # the open evaluation's context
        ("log", "eval_accuracy", 1.0, 4, None),
        ("log", "train/total_flos", 12.0, 4, "training"),
    ]


def test_hf_evaluate_is_one_bracketed_evaluation(recorded: list[tuple[Any, ...]]) -> None:
    state = hf._TrainerState()
    eval_dataset = object()
    args = types.SimpleNamespace(to_dict=lambda: {"learning_rate": 0.1, "hub_token": "x"})
    trainer = type("Trainer", (), {})()
    trainer.args, trainer.eval_dataset, trainer.model = args, eval_dataset, None
    callback = hf._callback_type(object, state)(trainer)

    def evaluate(*args: Any, **kwargs: Any) -> dict[str, float]:
        metrics = {"eval_loss": 0.5, "epoch": 2.0}
        callback.on_log(None, types.SimpleNamespace(global_step=9), None, logs=metrics)
        callback.on_evaluate(None, types.SimpleNamespace(global_step=9), None, metrics=metrics)
        return metrics

    wrapper = state.evaluation_wrapper("eval_dataset", "eval")
    assert wrapper(evaluate, trainer, (), {}) == {"eval_loss": 0.5, "epoch": 2.0}
    assert recorded == [
        ("params", {"learning_rate": 0.1, "hub_token": "x"}, "transformers.TrainingArguments", ""),
        ("begin_evaluation", "validation", eval_dataset),
        ("log", "eval_loss", 0.5, 9, "validation"),  # once (on_log skipped), no "epoch"
        ("end_evaluation",),
    ]
    recorded.clear()
    wrapper(evaluate, trainer, (eval_dataset,), {"metric_key_prefix": "test"})
    assert recorded[0] == ("begin_evaluation", "test", eval_dataset)  # configured once


def test_hf_training_arguments_core_and_changed_values() -> None:
    import dataclasses
    import enum

    class Strategy(enum.Enum):
        NO = "no"
        EPOCH = "epoch"

    @dataclasses.dataclass
    class Arguments:
        learning_rate: float = 5e-5
        logging_steps: int = 500
        eval_strategy: Strategy = Strategy.NO
        report_to: list[str] = dataclasses.field(default_factory=list)

        def to_dict(self) -> dict[str, Any]:
            d = dataclasses.asdict(self)
            return {k: v.value if isinstance(v, enum.Enum) else v for k, v in d.items()}

    # core settings always, the rest only where the script changed it
    assert hf.training_arguments(Arguments()) == {"learning_rate": 5e-5, "eval_strategy": "no"}
    assert hf.training_arguments(Arguments(eval_strategy=Strategy.EPOCH, report_to=["x"])) == {
        "learning_rate": 5e-5,
        "eval_strategy": "epoch",
        "report_to": ["x"],
    }
