"""The step machine driven by its events alone, with a fake clock: no hook, no training.

Each test hands the tracker the events the hooks would (batch fetched, backward begin/end,
optimizer step begin/end, model mode, a loss without gradients) at chosen times and checks the
passes, blocks and per-step values it emits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from provtel.instrumentation.torch import tracker as tracker_module
from provtel.instrumentation.torch.config import Config
from provtel.instrumentation.torch.tracker import Tracker
from tests.support import unpacked

MS = 1_000_000


class Clock:
    """A fake ``perf_counter_ns``."""

    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now

    def at(self, ms: float) -> int:
        return 10**12 + int(ms * MS)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tracker, Clock, Any]]:
    clock = Clock()
    monkeypatch.setattr(tracker_module, "perf", clock)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(shutdown_on_exit=False)
    tracker = Tracker(
        provider.get_tracer("test"), meters.get_meter("test"), Config(block_seconds=60), torch
    )
    tracker._flusher_stop = tracker_module.threading.Event()  # no idle flusher thread

    def finish() -> list[ReadableSpan]:
        tracker.finish()
        return list(exporter.get_finished_spans())

    yield tracker, clock, finish
    provider.shutdown()
    meters.shutdown()


def _blocks(spans: list[ReadableSpan]) -> list[dict[str, Any]]:
    found = [unpacked(s.attributes) for s in spans if s.name == "ml.step_block"]
    return sorted(found, key=lambda a: a["ml.step.first"])


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.5)


def _step(tracker: Tracker, clock: Clock, optimizer: Any, start_ms: float, loss: float) -> None:
    """backward 1 ms, then optimizer step 2 ms, from ``start_ms``."""
    t = clock.at(start_ms)
    tracker.backward_begin(torch.tensor(loss), t)
    tracker.backward_end(t, t + 1 * MS, None)
    tracker.optimizer_begin(optimizer, t + 1 * MS)
    tracker.optimizer_end(optimizer, t + 3 * MS)


def test_dataloader_steps_from_batch_events(machine: Any) -> None:
    tracker, clock, finish = machine
    loader = DataLoader(TensorDataset(torch.zeros(6, 2)), batch_size=2)
    optimizer = _optimizer()
    p = tracker.loader_begin(loader, clock.at(0))
    assert p is not None
    for i, loss in enumerate((3.0, 2.0, 1.0)):
        start = 10 * i
        tracker.batch_fetched(p, clock.at(start), clock.at(start + 0.5), [torch.zeros(2, 2)])
        _step(tracker, clock, optimizer, start + 1, loss)
    clock.now = clock.at(35)
    tracker.loader_stopped(p, clock.at(30), exhausted=True)
    spans = finish()
    (block,) = _blocks(spans)
    assert list(block["ml.step.loss"]) == [3.0, 2.0, 1.0]
    assert list(block["ml.step.duration"]) == [0.01, 0.01, 0.01]
    assert list(block["ml.step.data_wait"]) == [0.0005] * 3
    assert list(block["ml.step.backward"]) == [0.001] * 3
    assert list(block["ml.step.optimizer"]) == [0.002] * 3
    assert list(block["ml.step.learning_rate"]) == [0.5] * 3
    assert list(block["ml.step.batch_size"]) == [2, 2, 2]
    (epoch,) = [dict(s.attributes or {}) for s in spans if s.name == "ml.epoch"]
    assert epoch["ml.pass.batches"] == 3 and epoch["ml.pass.source"] == "dataloader"


def test_optimizer_steps_without_a_loader_are_a_pass_from_model_state(machine: Any) -> None:
    tracker, clock, finish = machine
    optimizer = _optimizer()
    for i, loss in enumerate((4.0, 3.0)):
        _step(tracker, clock, optimizer, 5 * i, loss)
    # an evaluation: model.eval(), two losses without gradients, model.train()
    clock.now = clock.at(12)
    tracker.on_mode(False)
    for ms, value in ((14, 0.5), (16, 1.5)):
        clock.now = clock.at(ms)
        tracker.eval_loss(value, 4, ("data", 1), "val")
    clock.now = clock.at(18)
    tracker.on_mode(True)
    _step(tracker, clock, optimizer, 20, 2.0)
    spans = finish()
    passes = sorted(
        (s for s in spans if s.name in ("ml.epoch", "ml.evaluation")),
        key=lambda s: s.start_time or 0,
    )
    kinds = [(s.name, (s.attributes or {}).get("ml.context")) for s in passes]
    assert kinds == [
        ("ml.epoch", "training"),
        ("ml.evaluation", "validation"),  # training followed it
        ("ml.epoch", "training"),
    ]
    evaluation = dict(passes[1].attributes or {})
    assert evaluation["ml.eval.loss"] == (0.5 * 4 + 1.5 * 4) / 8
    assert evaluation["ml.dataset.name"] == "val"
    # the training pass ended with its last step (8 ms), the evaluation began at model.eval()
    assert (passes[1].start_time or 0) - (passes[0].end_time or 0) == 4 * MS
    blocks = _blocks(spans)
    training = [v for b in blocks if b["ml.context"] == "training" for v in b["ml.step.loss"]]
    assert training == [4.0, 3.0, 2.0]
    evaluated = [v for b in blocks if b["ml.context"] == "validation" for v in b["ml.step.loss"]]
    assert evaluated == [0.5, 1.5]


def test_two_optimizers_make_one_step(machine: Any) -> None:
    tracker, clock, finish = machine
    d, g = _optimizer(), _optimizer()
    for i in range(3):
        start = 10 * i
        _step(tracker, clock, d, start, float(i))  # discriminator: backward + step
        _step(tracker, clock, g, start + 4, 9.0)  # generator: backward + step, same step
    spans = finish()
    (block,) = _blocks(spans)
    assert list(block["ml.step.loss"]) == [0.0, 1.0, 2.0]  # the first backward's
    assert list(block["ml.step.optimizer"]) == [0.004] * 3  # both optimizers
    # a step ends where its last optimizer step ended (at 7 ms for the first); the next one
    # begins there
    assert list(block["ml.step.duration"])[:2] == [0.007, 0.01]
