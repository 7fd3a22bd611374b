"""The pass lifecycle: which epoch or evaluation the work of the script belongs to.

A *pass* is one epoch of training or one evaluation. It comes from a DataLoader iteration
(source ``dataloader``) or from the model's own state (source ``model``: training steps outside
any DataLoader, losses computed without gradients after ``model.eval()``); a framework may
bracket an evaluation (:meth:`Passes.begin_evaluation` … :meth:`Passes.end_evaluation`).

:class:`Passes` takes the events that decide passes — a loader's first batch, its
``StopIteration``, its iterator dropped, a training step outside a loader, a loss without
gradients, a mode flip (``model.train()`` / ``model.eval()``), a framework's evaluation and
sanity check, the end of the run — and opens, ends and closes the pass spans. The steps
themselves (the per-step hot path) stay with the tracker, reached through the narrow
:class:`Steps` interface, so the lifecycle is unit-tested with a fake clock and fake steps.

A DataLoader pass lives through four states:

* **open**: the loader hands out batches;
* **draining**: the loader raised ``StopIteration``. A loader that prefetches (accelerate's
  ``DataLoaderShard``, used by the Hugging Face ``Trainer``, asks for the next batch before it
  hands out the current one) gets there before its last batch is processed, so the work after
  it — a training step, the loss of the last evaluation batch, values logged — still belongs to
  the pass. It drains until its iterator is dropped, the next pass starts, the model's mode
  flips, the framework's evaluation that opened it ends, or the run ends; it then ends where
  its last work (else its ``StopIteration``) ended;
* **ended**: batches, epoch, the evaluation summary (``ml.eval.*`` and its ``eval_loss`` row)
  are known;
* **closed**: an evaluation's context is decided (validation if training follows or the same
  data was validated on before, else test) and its span is ended.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from opentelemetry.trace import Span

from provtel.instrumentation import activity
from provtel.instrumentation.torch import logs
from provtel.instrumentation.torch.hparams import loader_attributes
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import spans

__all__ = ["EVAL_LOSS_ROW", "Pass", "Passes", "Steps"]

#: The name of the row an evaluation pass's batch-weighted mean loss is logged under; a value
#: a framework or the user logs under this name for the pass replaces it (HF's ``eval_loss``).
EVAL_LOSS_ROW = "eval_loss"


class Pass:
    """One pass over a DataLoader or from the model's state: an epoch when it trains, an
    evaluation otherwise."""

    __slots__ = (
        "attributes",
        "batches",
        "bracketed",
        "context",
        "dataset",
        "drained",
        "end_ns",
        "ended",
        "epoch",
        "eval_losses",
        "eval_weights",
        "exhausted",
        "forced",
        "handle",
        "logs",
        "own_eval_loss",
        "pending",
        "source",
        "span",
        "stopped_ns",
        "training",
    )

    def __init__(
        self,
        span: Span,
        attributes: dict[str, Any],
        handle: activity.Handle,
        dataset: Any,
        source: str = "dataloader",
        forced: str | None = None,
    ) -> None:
        self.span = span
        self.attributes = attributes
        self.handle = handle
        self.dataset = dataset  # identity of the data, to tell validation from test
        self.source = source  # dataloader | model
        self.forced = forced  # a context the user or a framework named (provtel.context)
        self.bracketed = False  # opened inside a framework's evaluation that is still running
        self.training = False
        self.context: str | None = None  # decided when the pass ends (training) or later
        self.epoch: int | None = None
        self.batches = 0
        self.ended = False
        self.end_ns = 0
        self.exhausted = False  # its loader raised StopIteration: draining
        self.stopped_ns = 0  # perf ns of that StopIteration
        self.drained = False  # work came after it
        self.own_eval_loss = False  # a row named EVAL_LOSS_ROW was logged for it
        self.pending: list[tuple[dict[str, Any], Any, list[float]]] = []
        self.logs: list[logs.Row] = []
        # losses computed without gradients in the pass (kept as tensors on devices) and
        # their batch sizes: the evaluation summary, read once when the pass ends
        self.eval_losses: list[Any] = []
        self.eval_weights: list[int] = []


class Steps(Protocol):
    """What the pass lifecycle needs from the step machine (the tracker)."""

    last_boundary: int  # perf ns where the latest step ended
    optimizer_steps: int

    def pass_parent(self) -> Any:
        """The run's context, starting the run (None: nothing is recorded)."""

    def start_pass_span(self, ctx: Any, attributes: dict[str, Any], start: int | None) -> Span:
        """A pass span, child of ``ctx``, starting at perf ns ``start`` (None: now)."""

    def close_steps(self, p: Pass, now: int) -> None:
        """End the open step and hand over the open block, when they belong to ``p``."""

    def end_open_step(self, now: int) -> None:
        """End the open step, whatever its pass."""

    def send_block(
        self, attributes: dict[str, Any], block: Any, losses: list[float], p: Pass
    ) -> None:
        """Send a block held until its evaluation pass's context was known."""

    def table(self, rows: list[logs.Row], context: str) -> dict[str, Any]:
        """The ``ml.log.*`` attributes of ``rows``."""

    def read(self, values: list[Any]) -> list[float]:
        """Floats for values kept as tensors (one transfer)."""

    def unix_ns(self, perf_ns: int) -> int:
        """Unix ns of a perf ns reading."""


class Passes:
    """The pass lifecycle of one process (see the module documentation)."""

    def __init__(self, steps: Steps, clock: Any) -> None:
        self.steps = steps
        self.clock = clock  # perf_counter_ns, or a fake one in tests
        self.passes: list[Pass] = []  # not yet ended
        self.undecided: list[Pass] = []  # evaluation passes: validation or test?
        self.validation_datasets: set[Any] = set()
        self.dataset_names: dict[Any, str] = {}
        self.model_pass: Pass | None = None  # a pass delimited by train/eval and grad mode
        self.eval_mode_ns = 0  # perf ns of the latest model.eval() (0: in train mode)
        self.framework_context: str | None = None  # begin_evaluation(context)
        self.framework_dataset: Any = None
        self.in_evaluation = False  # between begin_evaluation and end_evaluation
        self.sanity = False  # a framework's sanity check: recorded nowhere
        self.training_passes = 0
        self.eval_passes = 0
        self.trained = False  # a backward or optimizer step happened (in a pass or not)

    def reset(self) -> None:
        """A new run in this process: its own epochs, evaluations and validation data."""
        self.training_passes = self.eval_passes = 0
        self.trained = False
        self.validation_datasets.clear()
        self.eval_mode_ns = 0
        self.model_pass = None

    # -- queries ---------------------------------------------------------------------------
    def loader_pass_open(self) -> bool:
        """A DataLoader pass is still handing out batches."""
        for p in self.passes:  # a loop, not any(<generator>): this runs per evaluation batch
            if not p.ended and not p.exhausted and p.source == "dataloader":
                return True
        return False

    def loaders_quiet(self) -> bool:
        """No DataLoader pass is handing out batches or draining (``not loader_pass_open()``
        and ``draining() is None`` in one loop: this runs per evaluation batch)."""
        for p in self.passes:
            if not p.ended and (p.exhausted or p.source == "dataloader"):
                return False
        return True

    def draining(self) -> Pass | None:
        """The latest DataLoader pass that got StopIteration and has not ended."""
        for p in reversed(self.passes):
            if p.exhausted and not p.ended:
                return p
        return None

    def context_of(self, p: Pass | None) -> str:
        """The context a value of ``p`` is sent with (training for the run)."""
        if p is None:
            return act.TRAINING
        return p.context or (act.TRAINING if p.training else act.VALIDATION)

    # -- opening ---------------------------------------------------------------------------
    def loader_pass(self, loader: Any, start: int | None = None) -> Pass | None:
        """A DataLoader's first batch is asked for (at perf ns ``start``; None: now): its pass
        (None in a sanity check or outside a run), beginning there, where its first step
        begins. A pass from the model's state and a draining pass end first."""
        if self.sanity:
            return None
        ctx = self.steps.pass_parent()
        if ctx is None:
            return None
        now = self.clock() if start is None else start
        if self.model_pass is not None:
            self.end(self.model_pass, self.steps.last_boundary or now)
        for p in [p for p in self.passes if p.exhausted]:
            self.end(p, now)
        attributes = loader_attributes(loader)
        dataset = getattr(loader, "dataset", loader)
        if self.framework_dataset is not None:
            dataset = self.framework_dataset
        attributes[sc.ML_DATASET_NAME] = self.dataset_name(
            id(dataset), str(attributes.get(sc.ML_DATASET_NAME, "dataset"))
        )
        return self.open(ctx, attributes, id(dataset), "dataloader", now)

    def dataset_name(self, identity: Any, base: str) -> str:
        """A name per data identity: ``base``, then ``base#2`` … for other data of that name."""
        name = self.dataset_names.get(identity)
        if name is None:
            n = sum(1 for v in self.dataset_names.values() if v.split("#")[0] == base) + 1
            name = self.dataset_names[identity] = base if n == 1 else f"{base}#{n}"
        return name

    def open(
        self, ctx: Any, attributes: dict[str, Any], dataset: Any, source: str, start: int | None
    ) -> Pass:
        """Open a pass span (an evaluation until a training step makes it an epoch)."""
        attributes[sc.ML_PASS_SOURCE] = source
        forced = logs.USER_CONTEXT.get() or self.framework_context
        span = self.steps.start_pass_span(ctx, attributes, start)
        p = Pass(span, attributes, activity.begin(act.EVALUATION), dataset, source, forced)
        p.bracketed = self.in_evaluation
        self.passes = [q for q in self.passes if not q.ended]  # end() prunes too; stay bounded
        self.passes.append(p)
        return p

    def training_pass(self, now: int) -> Pass | None:
        """The pass of a training step outside any DataLoader step: the draining pass whose
        loader prefetched its last batch, the open model training pass, else a new one (an
        evaluation pass from the model's state ends first). None: no pass (a sanity check, or
        a step between the batches of a DataLoader pass)."""
        p = self.model_pass
        if p is not None and p.training and not p.ended:
            return p
        if self.sanity:
            return None
        drain = self.draining()
        if drain is not None:
            if drain.training or not drain.eval_losses:
                drain.drained = True
                return drain
            self.end(drain, now)  # training after an evaluation's loader ended: it is over
        if self.loader_pass_open():
            return None
        ctx = self.steps.pass_parent()
        if ctx is None:
            return None
        start = self.steps.last_boundary or now
        if p is not None and not p.ended:
            self.end(p, start)
        opened = self.model_pass = self.open(ctx, {}, None, "model", start)
        self.mark_training(opened)
        return opened

    def loss_pass(self, identity: Any, name: str | None, now: int) -> Pass | None:
        """The evaluation pass a loss computed without gradients outside a DataLoader step
        belongs to: the draining evaluation pass while it has batches without a loss (or its
        framework evaluation runs), the model's evaluation pass over the same data, else a new
        one from the model's state (ending the one before). None: not recorded."""
        if self.sanity or self.loader_pass_open():
            return None
        drain = self.draining()
        if drain is not None:
            if not drain.training and (drain.bracketed or len(drain.eval_losses) < drain.batches):
                drain.drained = True
                return drain
            self.end(drain, now)
        p = self.model_pass
        if p is not None and not p.ended and not p.training and p.dataset == identity:
            return p
        ctx = self.steps.pass_parent()
        if ctx is None:
            return None
        self.steps.end_open_step(now)
        start = self.steps.last_boundary or now
        if p is not None and not p.ended:
            self.end(p, start)
        if self.eval_mode_ns and self.eval_mode_ns > start:
            start = self.eval_mode_ns  # the evaluation began at model.eval()
        attributes = {}
        if name is not None:
            attributes[sc.ML_DATASET_NAME] = self.dataset_name(identity, name)
        opened = self.model_pass = self.open(ctx, attributes, identity, "model", start)
        self.steps.last_boundary = start
        return opened

    # -- what a pass is ----------------------------------------------------------------------
    def mark_training(self, p: Pass | None) -> None:
        """Backward or an optimizer step happened in pass ``p``: it is a training epoch."""
        if p is None:  # training without a DataLoader
            self.trained = True
            if self.undecided:
                self.decide(act.VALIDATION)  # the evaluation passes before it were validation
            return
        if not p.training:
            self.trained = True
            p.training = True
            p.context = act.TRAINING
            p.epoch = self.training_passes
            self.training_passes += 1
            # Evaluation passes between training epochs were validation.
            self.decide(act.VALIDATION)

    def on_mode(self, training: bool) -> None:
        """The outermost ``Module.train(mode)`` / ``.eval()`` call of the script. A flip ends
        the draining passes (not a framework's evaluation: its end says when)."""
        now = self.clock()
        flipped = training == (self.eval_mode_ns != 0)
        if flipped:
            for drain in [p for p in self.passes if p.exhausted and not p.bracketed]:
                self.end(drain, now)
        if not training:
            self.eval_mode_ns = now
            return
        self.eval_mode_ns = 0
        p = self.model_pass
        if p is not None and not p.training and not p.ended:
            self.end(p, self.evaluated_until(p, now))  # model.train(): the evaluation is over

    # -- ending ----------------------------------------------------------------------------
    def loader_stopped(self, p: Pass | None, t0: int, exhausted: bool) -> None:
        """The loader of ``p`` raised at ``t0`` (StopIteration when ``exhausted``): the pass
        drains (its open step has ended at ``t0``)."""
        if exhausted and p is not None and not p.ended and not p.exhausted:
            p.exhausted = True
            p.stopped_ns = t0

    def loader_dropped(self, p: Pass, now: int) -> None:
        """The iterator of ``p`` was dropped (the loop is over, or left with ``break``): the
        pass ends, unless the framework evaluation that opened it is still running."""
        if p.ended or (p.exhausted and p.bracketed):
            return
        self.end(p, now)

    def begin_evaluation(self, context: str | None, dataset: Any) -> None:
        """A framework evaluates: the passes it opens take ``context`` and ``dataset``."""
        self.framework_context = context
        self.framework_dataset = dataset
        self.in_evaluation = True

    def end_evaluation(self) -> None:
        """The framework's evaluation is over: the passes it opened and an evaluation pass
        from the model's state end (values logged meanwhile are on them)."""
        now = self.clock()
        self.framework_context = None
        self.framework_dataset = None
        self.in_evaluation = False
        for opened in [p for p in self.passes if p.bracketed]:
            opened.bracketed = False
            self.end(opened, now)
        p = self.model_pass
        if p is not None and not p.training and not p.ended:
            self.end(p, now)

    def end_all(self, now: int) -> None:
        """The run ends: every pass ends, every evaluation is decided by its data."""
        for p in list(self.passes):
            self.end(p, self.evaluated_until(p, now))
        self.decide(None)
        self.model_pass = None

    def evaluated_until(self, p: Pass, now: int) -> int:
        """Where pass ``p``, noticed to be over at ``now``, ends: an evaluation from the model's
        state at its last batch (what came after it, e.g. a save of the best model before
        ``model.train()``, is not evaluation, and the next training pass begins there too);
        any other pass at ``now``."""
        last = self.steps.last_boundary
        if p.source == "model" and not p.training and last and last < now:
            return last
        return now

    def end(self, p: Pass, now: int) -> None:
        """End pass ``p`` at ``now`` (a draining pass: where its last work ended)."""
        if p.ended:
            return
        steps = self.steps
        if p.exhausted and not p.drained:
            now = p.stopped_ns  # nothing came after its StopIteration
        steps.close_steps(p, now)
        if p.exhausted and p.drained:
            now = max(p.stopped_ns, steps.last_boundary)
        p.ended = True
        self.passes = [q for q in self.passes if not q.ended]
        if self.model_pass is p:
            self.model_pass = None
        p.end_ns = steps.unix_ns(now)
        attributes: dict[str, Any] = {sc.ML_PASS_BATCHES: p.batches}
        if p.training:
            p.span.update_name(spans.EPOCH)
            attributes[sc.ML_ACTIVITY] = act.EPOCH
            attributes[sc.ML_CONTEXT] = act.TRAINING
            attributes[sc.ML_EPOCH] = p.epoch
            attributes[sc.ML_PASS_INDEX] = p.epoch
            attributes.update(activity.finish(act.EPOCH, p.handle))
            if p.logs:
                attributes.update(steps.table(p.logs, act.TRAINING))
                p.logs = []
            p.eval_losses = []
            p.span.set_attributes(attributes)
            p.span.end(end_time=p.end_ns)
            return
        attributes[sc.ML_ACTIVITY] = act.EVALUATION
        attributes[sc.ML_PASS_INDEX] = self.eval_passes
        self.eval_passes += 1
        if self.training_passes:
            attributes[sc.ML_EPOCH] = self.training_passes - 1
        attributes.update(activity.finish(act.EVALUATION, p.handle))
        attributes.update(self.evaluation_summary(p, now))
        p.span.set_attributes(attributes)
        self.undecided.append(p)
        if p.forced:
            self.decide(None)  # the user or a framework named its context
        # else validation if training follows, else decided at the end by its data

    def evaluation_summary(self, p: Pass, now: int) -> dict[str, Any]:
        """``ml.eval.*`` of an evaluation pass, and its ``eval_loss`` row unless one was
        logged for the pass: the losses are read here, in one transfer for those on a device."""
        if not p.eval_losses:
            return {}
        values = self.steps.read(p.eval_losses)
        total = 0.0
        samples = 0
        for v, n in zip(values, p.eval_weights, strict=True):
            total += v * n
            samples += n
        p.eval_losses = []
        mean = total / samples if samples else math.nan
        if not p.own_eval_loss:
            row = (EVAL_LOSS_ROW, mean, self.steps.optimizer_steps, None, self.steps.unix_ns(now))
            p.logs.append(row)
        return {
            sc.ML_EVAL_LOSS: mean,
            sc.ML_EVAL_BATCHES: len(values),
            sc.ML_EVAL_SAMPLES: samples,
        }

    def decide(self, context: str | None) -> None:
        """Close the evaluation passes waiting for their context (``None``: by dataset)."""
        undecided, self.undecided = self.undecided, []
        for p in undecided:
            if p.forced:
                chosen = p.forced
            elif context is not None:
                chosen = context
            else:  # at the end: data validated on before is validation, else a test
                chosen = act.VALIDATION if p.dataset in self.validation_datasets else act.TEST
            if chosen == act.VALIDATION:
                self.validation_datasets.add(p.dataset)
            self.close_evaluation(p, chosen)

    def close_evaluation(self, p: Pass, context: str) -> None:
        """Send what waited for the context of ``p`` (its blocks, its values), end its span."""
        p.context = context
        for attributes, block, losses in p.pending:
            self.steps.send_block(attributes, block, losses, p)
        p.pending.clear()
        p.span.set_attribute(sc.ML_CONTEXT, context)
        if p.logs:
            p.span.set_attributes(self.steps.table(p.logs, context))
            p.logs = []
        p.span.end(end_time=p.end_ns)
