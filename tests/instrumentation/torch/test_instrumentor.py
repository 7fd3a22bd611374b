"""TorchInstrumentor in-process, with an SDK tracer and meter provider and in-memory exporters.

torch is already imported here, so the post-import hooks run at ``instrument()``. The
instrumentor is a singleton that also registers an atexit handler and wraps ``sys.excepthook``,
``sys.exit`` and signal handlers: the fixture always uninstruments.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import random
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch._dynamo
import torch.optim.optimizer as optimizer_module
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from provtel.instrumentation.torch import TorchInstrumentor, hparams
from provtel.instrumentation.torch.tracker import Tracker
from tests.support import unpacked

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)

_SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def instrument(self, **kwargs: Any) -> TorchInstrumentor:
        instrumentor = TorchInstrumentor()
        instrumentor.instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs
        )
        return instrumentor

    def finish(self) -> list[ReadableSpan]:
        """Uninstrument (which ends the run) and return every span."""
        TorchInstrumentor().uninstrument()
        return list(self.exporter.get_finished_spans())

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    for name in ("BLOCK_STEPS", "BLOCK_SECONDS", "CHECKPOINT_DIGEST", "CUDA_EVENTS"):
        monkeypatch.delenv(f"OTEL_PYTHON_PROVTEL_TORCH_{name}", raising=False)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Otel(exporter, reader, tracer_provider, meter_provider)
    if TorchInstrumentor().is_instrumented_by_opentelemetry:
        TorchInstrumentor().uninstrument()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def blocks(spans: list[ReadableSpan], context: str = "training") -> list[dict[str, Any]]:
    """Attributes of the step-block spans of a context, in step order."""
    found = [
        unpacked(s.attributes)
        for s in spans
        if s.name == "ml.step_block" and (s.attributes or {}).get("ml.context") == context
    ]
    return sorted(found, key=lambda a: a["ml.step.first"])


def per_step(spans: list[ReadableSpan], key: str, context: str = "training") -> list[Any]:
    return [v for b in blocks(spans, context) for v in b.get(key, ())]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


# -- training loops (each returns the loss of every step as the step definition says) ----------


def _data(n: int = 48, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return TensorDataset(
        x, x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=generator)
    )


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def loop_dataloader(shape: tuple[int, ...] = ()) -> tuple[list[float], nn.Module]:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _epoch in range(2):
        for x, y in DataLoader(_data(), batch_size=8):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y).reshape(shape)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses, model


def loop_manual() -> tuple[list[float], nn.Module]:
    model, (x, y) = _model(), _data().tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for i in range(6):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x[8 * i : 8 * i + 8]), y[8 * i : 8 * i + 8])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model


def loop_no_optimizer() -> tuple[list[float], nn.Module]:
    model, (x, y) = _model(), _data().tensors
    losses = []
    for i in range(6):
        loss = nn.functional.mse_loss(model(x[8 * i : 8 * i + 8]), y[8 * i : 8 * i + 8])
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.05 * p.grad
        losses.append(loss.item())
    return losses, model


def loop_accumulation() -> tuple[list[float], nn.Module]:
    model, (x, y) = _model(), _data().tensors
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for i in range(12):
        loss = nn.functional.mse_loss(model(x[4 * i : 4 * i + 4]), y[4 * i : 4 * i + 4]) / 3
        loss.backward()
        if i % 3 == 0:
            losses.append(loss.item())  # a step is an optimizer step: its first micro-batch
        if i % 3 == 2:
            optimizer.step()
            optimizer.zero_grad()
    return losses, model


def loop_lbfgs() -> tuple[list[float], nn.Module]:
    model, (x, y) = _model(), _data().tensors
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=4)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return [optimizer.step(closure).item() for _ in range(4)], model


def loop_gan() -> tuple[list[float], nn.Module]:
    torch.manual_seed(2)
    generator, critic = nn.Linear(3, 4), nn.Linear(4, 1)
    opt_c = torch.optim.SGD(critic.parameters(), lr=0.01)
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.01)
    real = _data(40).tensors[0]
    losses = []
    for i in range(5):
        fake = generator(torch.randn(8, 3))
        opt_c.zero_grad()
        loss_c = critic(fake.detach()).mean() - critic(real[8 * i : 8 * i + 8]).mean()
        loss_c.backward()
        opt_c.step()
        opt_g.zero_grad()
        loss_g = -critic(fake).mean()
        loss_g.backward()
        opt_g.step()
        losses.append(loss_c.item())  # the step's first backward
    return losses, nn.ModuleList([generator, critic])


def loop_grad_scaler() -> tuple[list[float], nn.Module]:
    """Without a DataLoader, with GradScaler skipping several steps in a row."""
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38, growth_interval=3)
    x, y = torch.randn(16, 8) * 30, torch.randn(16, 1) * 30
    losses, skipped = [], []
    for _ in range(12):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
        skipped.append(int(scaler.get_scale() < scale))
    model.skipped = skipped  # type: ignore[assignment]
    return losses, model


LOOPS: dict[str, Callable[[], tuple[list[float], nn.Module]]] = {
    "dataloader": loop_dataloader,
    "loss_of_shape_1": lambda: loop_dataloader((1,)),
    "manual": loop_manual,
    "no_optimizer": loop_no_optimizer,
    "accumulation": loop_accumulation,
    "lbfgs": loop_lbfgs,
    "gan": loop_gan,
    "grad_scaler": loop_grad_scaler,
}


def _parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", list(LOOPS))
def test_every_step_and_its_loss(otel: Otel, name: str) -> None:
    plain_losses, plain_model = LOOPS[name]()
    otel.instrument()
    losses, model = LOOPS[name]()
    spans = otel.finish()
    assert losses == plain_losses
    assert all(
        torch.equal(a, b) for a, b in zip(_parameters(model), _parameters(plain_model), strict=True)
    )
    assert per_step(spans, "ml.step.loss") == losses
    assert len(per_step(spans, "ml.step.duration")) == len(losses)
    if name == "grad_scaler":
        skipped = model.skipped  # type: ignore[attr-defined]
        assert 0 < sum(skipped) < len(skipped) and [1, 1] in [skipped[i : i + 2] for i in range(11)]
        assert per_step(spans, "ml.step.skipped") == skipped
    (run,) = named(spans, "ml.run")
    assert run.status.status_code.name != "ERROR"
    steps = otel.metric_points("ml.steps")
    assert sum(p.value for p in steps) == len(losses)


# -- uninstrument --------------------------------------------------------------------------------


def _patched_attributes() -> dict[str, Any]:
    return {
        "torch.save": torch.save,
        "torch.load": torch.load,
        "torch.manual_seed": torch.manual_seed,
        "torch.autograd.backward": torch.autograd.backward,
        "DataLoader.__iter__": DataLoader.__dict__["__iter__"],
        "Optimizer.__init__": torch.optim.Optimizer.__dict__["__init__"],
        "LRScheduler.__init__": torch.optim.lr_scheduler.LRScheduler.__dict__["__init__"],
        "Module.parameters": nn.Module.__dict__["parameters"],
        "GradScaler.step": torch.amp.GradScaler.__dict__["step"],
        "GradScaler.scale": torch.amp.GradScaler.__dict__["scale"],
        "random.seed": random.seed,
        "numpy.random.seed": np.random.seed,
        "ArgumentParser.parse_known_args": argparse.ArgumentParser.__dict__["parse_known_args"],
        "sys.excepthook": sys.excepthook,
        "sys.exit": sys.exit,
        **{f"signal {s.name}": signal.getsignal(s) for s in _SIGNALS},
    }


def _hook_counts() -> tuple[int, int]:
    return (
        len(optimizer_module._global_optimizer_pre_hooks),
        len(optimizer_module._global_optimizer_post_hooks),
    )


def test_uninstrument_restores_everything(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[Any] = []  # atexit handlers registered and not unregistered

    def register(fn: Any, *args: Any, **kwargs: Any) -> Any:
        exits.append(fn)
        return fn

    monkeypatch.setattr(atexit, "register", register)
    monkeypatch.setattr(atexit, "unregister", lambda fn: exits.remove(fn) if fn in exits else None)
    before, hooks = _patched_attributes(), _hook_counts()
    for _ in range(2):  # and again: nothing piles up
        otel.instrument()
        during = _patched_attributes()
        changed = {k for k in before if during[k] is not before[k]}
        # Module.parameters is left alone (torch.compile guards on it)
        assert changed == set(before) - {"Module.parameters"}
        assert _hook_counts() == (hooks[0] + 1, hooks[1] + 1)
        assert len(exits) == 1
        loop_dataloader()
        spans = otel.finish()
        after = _patched_attributes()
        assert {k for k in before if after[k] is not before[k]} == set()
        assert _hook_counts() == hooks
        assert exits == []
        assert trace.get_current_span() is trace.INVALID_SPAN  # the run is no longer current
        assert len(named(spans, "ml.run")) == 1 and len(named(spans, "ml.epoch")) == 2
        otel.exporter.clear()
    loop_dataloader()  # nothing is recorded any more
    assert otel.exporter.get_finished_spans() == ()


def test_constructing_the_instrumentor_again_keeps_its_state(otel: Otel) -> None:
    original = torch.save
    otel.instrument()
    assert TorchInstrumentor() is TorchInstrumentor()  # BaseInstrumentor is a singleton
    assert TorchInstrumentor().tracker is not None
    TorchInstrumentor().uninstrument()
    assert torch.save is original


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_block_size(otel: Otel, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "argument":
        otel.instrument(block_steps=4)
    else:
        monkeypatch.setenv("OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS", "4")
        otel.instrument()
    losses, _ = loop_dataloader()  # two passes of 6 batches
    spans = otel.finish()
    found = blocks(spans)
    assert [(b["ml.step.first"], b["ml.step.count"]) for b in found] == [
        (0, 4),
        (4, 2),  # a block ends with its pass
        (6, 4),
        (10, 2),
    ]
    assert per_step(spans, "ml.step.loss") == losses


# -- failures inside hooks -----------------------------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("provtel test: a hook's helper failed")


@pytest.mark.parametrize(
    ("owner", "name", "still_recorded"),
    [
        (Tracker, "loader_step", "ml.step.loss"),  # the DataLoader hook stops
        # backward hook stops (a loss of shape (1,) takes the general path through _loss_of)
        (Tracker, "_loss_of", "ml.step.duration"),
        (hparams, "optimizer_hparams", "ml.step.loss"),  # optimizer construction hook stops
    ],
)
def test_a_failing_hook_disables_itself_and_training_continues(
    otel: Otel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    owner: Any,
    name: str,
    still_recorded: str,
) -> None:
    shape = (1,) if name == "_loss_of" else ()
    plain_losses, plain_model = loop_dataloader(shape)
    monkeypatch.setattr(owner, name, _boom)
    otel.instrument()
    with caplog.at_level(logging.ERROR, logger="provtel.instrumentation.torch"):
        losses, model = loop_dataloader(shape)
    spans = otel.finish()
    assert losses == plain_losses
    assert all(
        torch.equal(a, b) for a, b in zip(_parameters(model), _parameters(plain_model), strict=True)
    )
    failures = [r for r in caplog.records if "failed and is now disabled" in r.getMessage()]
    assert len(failures) == 1  # logged once, then the hook is off
    assert "provtel test" in caplog.text
    assert named(spans, "ml.run")
    assert per_step(spans, still_recorded)  # the other hooks go on recording


def test_a_hook_disabled_in_one_instrumentation_works_in_the_next(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Tracker, "loader_step", _boom)
    otel.instrument()
    loop_dataloader()
    otel.finish()
    monkeypatch.undo()
    otel.exporter.clear()
    otel.instrument()
    losses, _ = loop_dataloader()
    spans = otel.finish()
    assert len(named(spans, "ml.epoch")) == 2
    assert per_step(spans, "ml.step.batch_size") == [8.0] * len(losses)


class _Words(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Samples the default collate cannot give a tensor of: (word, target) pairs."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor]:
        return f"w{i}", torch.tensor([float(i)])


class _Pairs(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """A batch sampler of its own: batches of 2, then 3, then 5 samples."""

    def __iter__(self) -> Iterator[list[int]]:
        return iter([[0, 1], [2, 3, 4], [5, 6, 7, 8, 9]])

    def __len__(self) -> int:
        return 3


def _as_dict(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A collate function of the script's own: a dict of stacked tensors."""
    return {"x": torch.stack([s[0] for s in samples]), "y": torch.stack([s[1] for s in samples])}


@pytest.mark.parametrize(
    ("make", "sizes"),
    [
        (lambda d: DataLoader(d, batch_size=4, shuffle=True), [4, 4, 2]),
        (lambda d: DataLoader(d, batch_size=4), [4, 4, 2]),
        (lambda d: DataLoader(d, batch_size=4, drop_last=True), [4, 4]),
        (lambda d: DataLoader(d, batch_size=5), [5, 5]),
        (lambda d: DataLoader(d, batch_sampler=_Pairs()), [2, 3, 5]),  # read from the batch
        (lambda d: DataLoader(d, batch_size=4, collate_fn=_as_dict), [4, 4, 2]),  # read
    ],
)
def test_batch_sizes_as_the_loader_hands_them_out(
    otel: Otel, make: Callable[[Any], DataLoader[Any]], sizes: list[int]
) -> None:
    """The size of each step's batch, whether it is known from the DataLoader's settings
    (default batch sampler and collate: the hot path reads nothing) or read from the batch."""
    otel.instrument()
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the second epoch's blocks start at the hot path
        for batch in make(_data(10)):
            x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
    spans = otel.finish()
    assert per_step(spans, "ml.step.batch_size") == [float(s) for s in sizes] * 2


def test_batch_sizes_of_a_list_of_samples(otel: Otel) -> None:
    """A collate function that hands out the samples as they are (``collate_fn=list``): each
    batch is a list of ``(x, y)`` pairs, and its size is how many pairs, not the features of
    the first sample's ``x``."""
    otel.instrument()
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for samples in DataLoader(_data(10), batch_size=4, collate_fn=list):
        x = torch.stack([s[0] for s in samples])
        y = torch.stack([s[1] for s in samples])
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    spans = otel.finish()
    assert per_step(spans, "ml.step.batch_size") == [4.0, 4.0, 2.0]


@pytest.mark.parametrize(
    ("batch", "size"),
    [
        (torch.zeros(3, 4), 3),
        (torch.tensor(1.0), 1),
        ([torch.zeros(3, 4), torch.zeros(3)], 3),  # default collate of (x, y) samples
        ({"x": torch.zeros(5, 2)}, 5),
        ([{"ids": torch.zeros(6, 8)}, torch.zeros(6)], 6),  # of (dict, tensor) samples
        ([[torch.zeros(2, 4), torch.zeros(2)], [torch.zeros(2, 1), torch.zeros(2)]], 2),
        ([{"ids": torch.zeros(6, 8)}, {"label": torch.zeros(6)}], 6),  # of (dict, dict)
        (["a", "b"], -1),
        ([], -1),
    ],
)
def test_batch_size_read_from_a_batch(batch: Any, size: int) -> None:
    """The default collate's shapes: the first dimension of the first tensor, also when the
    batch is a list of two dicts (samples of an inputs dict and a targets dict)."""
    from provtel.instrumentation.torch.tracker import batch_size

    assert batch_size(batch) == size


@pytest.mark.parametrize(
    ("batch", "size"),
    [
        ([(torch.zeros(4), torch.zeros(1))] * 3, 3),  # collate_fn=list over (x, y) samples
        ([{"x": torch.zeros(4)}] * 7, 7),  # over dict samples
        ([{"ids": torch.zeros(6, 8)}, {"label": torch.zeros(6)}], 2),  # two samples of one key
        ([torch.zeros(5, 4), torch.zeros(5)], 5),  # a collate that stacks (x, y) itself
    ],
)
def test_batch_size_of_a_collate_of_the_scripts_own(batch: Any, size: int) -> None:
    from provtel.instrumentation.torch.tracker import batch_size

    assert batch_size(batch, samples=True) == size


def test_batch_sizes_of_dict_pairs_from_the_default_collate(otel: Otel) -> None:
    """Samples ``({"x": ...}, {"y": ...})`` through the default collate and a batch sampler of
    its own (the size is read from the batch): a list of two batched dicts is one batch of
    the sampler's size, not two samples."""
    otel.instrument()
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pairs = [({"x": x}, {"y": y}) for x, y in _data(10)]
    for inputs, targets in DataLoader(pairs, batch_sampler=_Pairs()):  # type: ignore[arg-type]
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs["x"]), targets["y"]).backward()
        optimizer.step()
    spans = otel.finish()
    assert per_step(spans, "ml.step.batch_size") == [2.0, 3.0, 5.0]


def test_batch_sizes_of_samples_that_are_not_tensors(otel: Otel) -> None:
    """A batch whose first item is a list of words: its size is the loader's, not unknown."""
    otel.instrument()
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for words, y in DataLoader(_Words(), batch_size=4):
        assert isinstance(words[0], str)  # a sequence of words: no tensor to read a size from
        optimizer.zero_grad()
        nn.functional.mse_loss(model(y), y).backward()
        optimizer.step()
    spans = otel.finish()
    assert per_step(spans, "ml.step.batch_size") == [4.0, 4.0, 2.0]


def test_an_evaluation_records_its_scalar_losses_and_skips_the_others(otel: Otel) -> None:
    """A hand-batched evaluation (slices of one validation tensor, the model in eval mode,
    no gradients) computes a per-sample loss (``reduction="none"``) and a scalar one per batch:
    only the scalars are the pass's values, each as computed, the mean weighted by batch."""
    otel.instrument()
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = _data(12)
    x_val, y_val = data.tensors

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x_val[:4]), y_val[:4]).backward()
        optimizer.step()

    step()
    model.eval()
    losses, weights = [], []
    with torch.no_grad():
        for i in range(0, 12, 5):  # batches of 5, 5 and 2
            out = model(x_val[i : i + 5])
            per_sample = nn.functional.mse_loss(out, y_val[i : i + 5], reduction="none")
            assert per_sample.numel() == len(out)
            losses.append(nn.MSELoss()(out, y_val[i : i + 5]).item())
            weights.append(len(out))
    model.train()
    step()  # training follows: the evaluation was a validation
    spans = otel.finish()
    (evaluation,) = [dict(s.attributes or {}) for s in named(spans, "ml.evaluation")]
    assert evaluation["ml.eval.batches"] == 3
    assert evaluation["ml.eval.samples"] == 12
    expected = sum(v * w for v, w in zip(losses, weights, strict=True)) / sum(weights)
    assert evaluation["ml.eval.loss"] == pytest.approx(expected, rel=1e-12)
    assert per_step(spans, "ml.step.loss", "validation") == losses


# -- hyperparameters -----------------------------------------------------------------------------


def test_hyperparameters_without_code_changes(otel: Otel) -> None:
    otel.instrument()
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--name", default="tiny")
    parser.parse_args(["--lr", "0.25"])
    random.seed(5)
    np.random.seed(6)
    model = _model()  # seeds torch with 1 first: the latest seed is recorded
    torch.manual_seed(7)
    optimizer = torch.optim.SGD(list(model.parameters()), lr=0.25, momentum=0.5)  # a list
    torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    second = torch.optim.Adam([{"params": model[0].parameters()}], lr=1e-3)
    loss = model(torch.randn(2, 4)).sum()
    loss.backward()
    optimizer.step()
    second.step()
    (run,) = named(otel.finish(), "ml.run")
    attributes = dict(run.attributes or {})
    expected = {
        "ml.hparam.lr": 0.25,
        "ml.hparam.name": "tiny",
        "ml.hparam.seed.random": 5,
        "ml.hparam.seed.numpy": 6,
        "ml.hparam.seed.torch": 7,
        "ml.hparam.optimizer": "SGD",
        "ml.hparam.optimizer.lr": 0.25,
        "ml.hparam.optimizer.momentum": 0.5,
        "ml.hparam.optimizer_2": "Adam",
        "ml.hparam.optimizer_2.lr": 1e-3,
        "ml.hparam.lr_scheduler": "CosineAnnealingLR",
        "ml.hparam.lr_scheduler.T_max": 10,
        "ml.model.class": "Sequential",  # found from a list of its parameters
        "ml.model.parameters": 4 * 8 + 8 + 8 + 1,
        "ml.model.dtype": "float32",
        "ml.model.device": "cpu",
    }
    assert {k: attributes.get(k) for k in expected} == expected


def test_model_found_from_its_parameters_generator(otel: Otel) -> None:
    otel.instrument()
    compiled = torch.compile(_model(), backend="eager")
    torch.optim.SGD(compiled.parameters(), lr=0.1)
    compiled(torch.randn(2, 4)).sum().backward()
    (run,) = named(otel.finish(), "ml.run")
    assert (run.attributes or {})["ml.model.class"] == "Sequential"  # not OptimizedModule


# -- torch.compile ---------------------------------------------------------------------------------


class _UsesParameters(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(next(self.parameters()).dtype)).relu().sum()


def _train_step() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _explain(fn: Any, *args: Any) -> tuple[int, int, int]:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    return explained.graph_count, explained.graph_break_count, explained.op_count


@pytest.mark.parametrize("what", ["module", "train_step"])
def test_torch_compile_captures_the_same_graphs(otel: Otel, what: str) -> None:
    x, y = torch.randn(3, 4), torch.randn(3, 1)

    def subject() -> tuple[Any, tuple[torch.Tensor, ...]]:
        return (_UsesParameters(), (x,)) if what == "module" else (_train_step(), (x, y))

    fn, args = subject()
    plain = _explain(fn, *args)
    otel.instrument()
    fn, args = subject()
    instrumented = _explain(fn, *args)
    spans = otel.finish()
    assert instrumented == plain
    if what == "train_step":
        assert len(per_step(spans, "ml.step.loss")) == 1  # and the step was recorded


def test_a_torch_script_does_not_import_numpy_random(tmp_path: Any) -> None:
    """The numpy seed hook waits for ``numpy.random`` (numpy 2 imports it lazily; reading it
    from the numpy hook would import it into every torch script), and still wraps ``seed``
    the moment a script uses it."""
    import subprocess

    code = (
        "import sys\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from provtel.instrumentation.torch import TorchInstrumentor\n"
        "TorchInstrumentor().instrument(tracer_provider=TracerProvider())\n"
        "import torch\n"
        "print('numpy' in sys.modules, 'numpy.random' in sys.modules)\n"
        "import numpy as np\n"
        "np.random.seed(5)\n"
        "print(hasattr(np.random.seed, '__wrapped__'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"OTEL_PYTHON_PROVTEL_OUTPUT_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout.split() == ["True", "False", "True"], out.stderr[-2000:]
