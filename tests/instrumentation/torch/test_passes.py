"""The pass lifecycle (``provtel.instrumentation.torch.passes``) driven by its events alone.

No torch, no SDK, no hooks: a fake clock, fake spans and fake steps stand in for the tracker,
and each test hands :class:`Passes` the events a script would cause (a loader's first batch,
its StopIteration, its iterator dropped, a training step or a loss without gradients after it,
a mode flip, a framework's evaluation) and checks which pass each piece of work joined, when
each pass ended and what it was decided to be.
"""

from __future__ import annotations

from typing import Any

from provtel.instrumentation.torch.passes import EVAL_LOSS_ROW, Pass, Passes

MS = 1_000_000


class FakeSpan:
    def __init__(self, attributes: dict[str, Any], start: int | None) -> None:
        self.name = "ml.evaluation"
        self.attributes = dict(attributes)
        self.start = start
        self.end_time: int | None = None

    def update_name(self, name: str) -> None:
        self.name = name

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)

    def end(self, end_time: int | None = None) -> None:
        assert self.end_time is None, "ended twice"
        self.end_time = end_time


class FakeSteps:
    """The tracker's side: spans are FakeSpans, Unix time = perf time, no real steps."""

    def __init__(self) -> None:
        self.last_boundary = 0
        self.optimizer_steps = 0
        self.spans: list[FakeSpan] = []
        self.closed: list[tuple[Pass, int]] = []

    def pass_parent(self) -> Any:
        return "run"

    def start_pass_span(self, ctx: Any, attributes: dict[str, Any], start: int | None) -> Any:
        span = FakeSpan(attributes, start)
        self.spans.append(span)
        return span

    def close_steps(self, p: Pass, now: int) -> None:
        self.closed.append((p, now))

    def end_open_step(self, now: int) -> None:
        pass

    def send_block(self, attributes: dict[str, Any], block: Any, losses: Any, p: Any) -> None:
        pass

    def table(self, rows: list[Any], context: str) -> dict[str, Any]:
        return {"ml.log.name": [r[0] for r in rows], "ml.log.value": [r[1] for r in rows]}

    def read(self, values: list[Any]) -> list[float]:
        return [float(v) for v in values]

    def unix_ns(self, perf_ns: int) -> int:
        return perf_ns


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class Loader:
    """Stands in for a DataLoader: a dataset identity and nothing else."""

    def __init__(self, dataset: object) -> None:
        self.dataset = dataset


def _machine() -> tuple[Passes, FakeSteps, Clock]:
    steps, clock = FakeSteps(), Clock()
    return Passes(steps, clock), steps, clock


def _fetch(p: Pass, n: int) -> None:
    p.batches += n  # what Tracker.batch_fetched counts


def _evaluation_loss(p: Pass, value: float, weight: int = 2) -> None:
    p.eval_losses.append(value)  # what Tracker.eval_loss records in the pass it was given
    p.eval_weights.append(weight)


def test_a_prefetching_training_loader_keeps_its_last_step() -> None:
    passes, steps, clock = _machine()
    p = passes.loader_pass(Loader(object()))
    assert p is not None
    _fetch(p, 6)
    passes.mark_training(p)
    passes.loader_stopped(p, 50 * MS, exhausted=True)  # asked ahead: the last batch is pending
    # the last batch's training step, outside any loader step: it joins the draining epoch
    clock.now = 55 * MS
    assert passes.training_pass(clock.now) is p
    assert not p.ended and passes.model_pass is None
    steps.last_boundary = 58 * MS  # that step ended at its optimizer step
    clock.now = 60 * MS
    passes.loader_dropped(p, clock.now)  # accelerate's generator finished
    assert p.ended and p.span.name == "ml.epoch"
    assert p.span.end_time == 58 * MS  # where its last work ended
    assert p.span.attributes["ml.pass.batches"] == 6
    assert len(steps.spans) == 1  # no second, one-batch pass from the model's state


def test_a_draining_pass_with_nothing_after_ends_at_its_stop() -> None:
    passes, _steps, clock = _machine()
    p = passes.loader_pass(Loader(object()))
    assert p is not None
    _fetch(p, 3)
    passes.mark_training(p)
    passes.loader_stopped(p, 30 * MS, exhausted=True)
    clock.now = 90 * MS  # the next epoch's loader, a minute of other work later
    q = passes.loader_pass(Loader(object()))
    assert p.ended and p.span.end_time == 30 * MS
    assert q is not None and not q.ended


def test_a_prefetching_evaluation_loader_keeps_its_last_batch_loss() -> None:
    passes, _steps, _clock = _machine()
    data = object()
    p = passes.loader_pass(Loader(data))
    assert p is not None
    _fetch(p, 2)
    _evaluation_loss(p, 1.0)  # the first batch, in a loader step
    passes.loader_stopped(p, 20 * MS, exhausted=True)
    # the second batch's loss comes after StopIteration: still this pass
    assert passes.loss_pass(id(data), None, 22 * MS) is p
    _evaluation_loss(p, 3.0)
    # a third loss: every batch has one; this is another evaluation, from the model's state
    other = passes.loss_pass(("tensor", 1), "test_x", 30 * MS)
    assert other is not None and other is not p and other.source == "model"
    assert p.ended
    assert p.span.attributes["ml.eval.loss"] == 2.0 and p.span.attributes["ml.eval.batches"] == 2


def test_a_framework_evaluation_ends_with_the_framework() -> None:
    passes, steps, clock = _machine()
    data = object()
    passes.begin_evaluation("validation", data)
    p = passes.loader_pass(Loader(object()))
    assert p is not None
    _fetch(p, 2)
    _evaluation_loss(p, 1.0)
    passes.loader_stopped(p, 20 * MS, exhausted=True)
    assert passes.loss_pass(id(data), None, 21 * MS) is p
    _evaluation_loss(p, 2.0)
    steps.last_boundary = 22 * MS
    passes.loader_dropped(p, 23 * MS)  # the loop is over, the framework not yet
    assert not p.ended
    passes.on_mode(True)  # a mode flip does not end a framework's evaluation either
    passes.on_mode(False)
    assert not p.ended
    # what the framework logs now lands on the pass (Tracker.log picks passes.draining())
    assert passes.draining() is p
    p.logs.append((EVAL_LOSS_ROW, 1.25, 6, "validation", 24))
    p.own_eval_loss = True
    clock.now = 25 * MS
    passes.end_evaluation()
    assert p.ended and p.context == "validation" and p.span.end_time == 22 * MS
    assert p.span.attributes["ml.context"] == "validation"
    assert p.span.attributes["ml.eval.loss"] == 1.5  # the hooks' mean stays on the span
    # the framework's eval_loss replaced the automatic row: one row, the framework's value
    assert p.span.attributes["ml.log.name"] == [EVAL_LOSS_ROW]
    assert p.span.attributes["ml.log.value"] == [1.25]


def test_without_a_framework_value_the_evaluation_logs_its_mean() -> None:
    passes, _steps, _clock = _machine()
    passes.begin_evaluation("validation", None)
    p = passes.loader_pass(Loader(object()))
    assert p is not None
    _fetch(p, 1)
    _evaluation_loss(p, 4.0)
    passes.loader_stopped(p, 10 * MS, exhausted=True)
    passes.end_evaluation()
    assert p.span.attributes["ml.log.name"] == [EVAL_LOSS_ROW]
    assert p.span.attributes["ml.log.value"] == [4.0]


def test_a_mode_flip_ends_a_draining_pass() -> None:
    passes, _steps, clock = _machine()
    p = passes.loader_pass(Loader(object()))
    assert p is not None
    _fetch(p, 2)
    passes.mark_training(p)
    passes.loader_stopped(p, 20 * MS, exhausted=True)
    clock.now = 21 * MS
    passes.on_mode(True)  # already training: no flip
    assert not p.ended
    clock.now = 30 * MS
    passes.on_mode(False)  # model.eval(): the training is over
    assert p.ended and p.span.end_time == 20 * MS


def test_evaluations_are_validation_when_training_follows_else_by_their_data() -> None:
    passes, steps, clock = _machine()
    train, val, test = object(), object(), object()
    for epoch in range(2):
        t = passes.loader_pass(Loader(train))
        assert t is not None
        _fetch(t, 2)
        passes.mark_training(t)
        passes.loader_stopped(t, clock.now, exhausted=True)
        passes.loader_dropped(t, clock.now)
        v = passes.loader_pass(Loader(val))
        assert v is not None
        _fetch(v, 1)
        _evaluation_loss(v, 1.0 + epoch)
        passes.loader_stopped(v, clock.now, exhausted=True)
        passes.loader_dropped(v, clock.now)
        clock.now += 10 * MS
    e = passes.loader_pass(Loader(test))
    assert e is not None
    _fetch(e, 1)
    _evaluation_loss(e, 5.0)
    passes.loader_stopped(e, clock.now, exhausted=True)
    passes.loader_dropped(e, clock.now)
    passes.end_all(clock.now)
    contexts = [(s.name, s.attributes.get("ml.context")) for s in steps.spans]
    assert contexts == [
        ("ml.epoch", "training"),
        ("ml.evaluation", "validation"),
        ("ml.epoch", "training"),
        ("ml.evaluation", "validation"),  # nothing followed, but its data was validated before
        ("ml.evaluation", "test"),
    ]
    assert [s.end_time for s in steps.spans] == [0, 0, 10 * MS, 10 * MS, 20 * MS]


def test_a_sanity_check_opens_no_pass() -> None:
    passes, steps, _clock = _machine()
    passes.sanity = True
    assert passes.loader_pass(Loader(object())) is None
    assert passes.training_pass(0) is None
    assert passes.loss_pass(None, None, 0) is None
    assert steps.spans == []
