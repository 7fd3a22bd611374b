"""The state of one instrumented training process: run, passes, steps and blocks.

Every hook calls into one :class:`Tracker`. It creates the run span lazily, at the first
training activity (a DataLoader pass, a backward, an optimizer step, a checkpoint), so that
processes which only import torch (DataLoader workers started with spawn, tools) record nothing;
the run still starts at the time the process was instrumented. Pass spans are children of the
run and block spans children of their pass; none of them is made the current span, so user code
keeps its own context (the run span is current for user spans).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from provtel.instrumentation import activity, clock
from provtel.instrumentation.torch import logs
from provtel.instrumentation.torch.config import Config
from provtel.instrumentation.torch.hparams import finite_or_nan
from provtel.instrumentation.torch.passes import EVAL_LOSS_ROW, Pass, Passes
from provtel.instrumentation.torch.steps import Block, StepRecorder, seconds
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import columns, spans
from provtel.semconv import metrics as mc
from provtel.semconv.redaction import redact_argv, redact_url
from provtel.semconv.workers import pool_worker

logger = logging.getLogger("provtel.instrumentation.torch")
#: hyperparameters per ``ml.log`` span of configuration (below the SDK's 128 attributes)
PARAMS_PER_SPAN = 100
perf = time.perf_counter_ns


class Tracker:
    """Run, pass and step bookkeeping shared by all hooks of the PyTorch instrumentation."""

    def __init__(self, tracer: Tracer, meter: Meter, config: Config, torch: Any) -> None:
        self.tracer = tracer
        self.config = config
        self.torch = torch
        self.started_ns = clock.unix_ns()
        self.enabled = True
        _off_in_forked_children(self)
        self._tensor_type: Any = getattr(torch, "Tensor", ())
        # per-step arrays as packed columns, unless the SDK would cut long strings
        self._pack = not any(
            os.environ.get(v)
            for v in ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
        )
        self.recorder = StepRecorder()
        self.run_span: Span | None = None
        self.run_context: otel_context.Context | None = None
        self._run_handle: activity.Handle = []
        self._context_token: object | None = None
        self.pending: dict[str, Any] = {}
        self.known: dict[str, Any] = {}
        self.param_batches: list[dict[str, Any]] = []  # log_params(), sent with each run
        self.run_name: str | None = None
        self.pending_digests: list[futures.Future[None]] = []
        # passes and steps
        # the pass lifecycle (passes.py); its clock is this module's perf (fake in tests)
        self.passes = Passes(self, lambda: perf())
        self.step_pass: Pass | None = None  # pass of the open step
        self.step_from_loader = False
        self.block_pass: Pass | None = None  # pass of the open block
        self.block_started = 0
        self.block_end_index = 0  # the block is full when the step index reaches this
        self.block_deadline = 0  # perf ns when the block is old enough to be sent
        self.block_handle: activity.Handle = []
        self.last_boundary = 0
        self.optimizer_seen = False
        self.optimizer_pre = 0
        self.optimizer_steps = 0  # optimizer.step() calls (GradScaler finds skipped steps)
        self.uses_scaler = False
        self.scaled: tuple[Any, Any] | None = None  # (scaled loss, unscaled loss)
        self.cuda_timer: Any = None
        self.optimizer_event: Any = None  # CUDA event at the optimizer pre-hook
        # outcome of the process
        self.exception: BaseException | None = None
        self.exit_code: Any = None
        self.signal: int | None = None
        # values logged outside any pass and block; passes from the model's own state
        self.run_logs: list[logs.Row] = []
        # values logged between passes after a training epoch ended (Lightning's epoch-reduced
        # values): that epoch's, sent on one ml.log span with its ml.epoch
        self.gap_logs: list[logs.Row] = []
        self.gap_epoch = -1
        self.last_data: Any = None  # (identity, name) of the latest batch source seen
        self.data_names: dict[Any, str] = {}  # data identity -> the script's name for it
        # the tensor the latest evaluation targets were a slice of: (weak reference, numel,
        # identity, name), so that the next batch of it needs no data_ptr or shape
        self.last_base: tuple[Any, int, Any, str] | None = None
        self.step_lock = threading.Lock()  # block hand-over: training thread vs idle flush
        self._flusher_stop: threading.Event | None = None
        self._flusher: threading.Thread | None = None
        self._idle_wake = threading.Event()  # a block opened: the idle flusher has work
        self.in_backward = False
        # Background work: checkpoint digests and live metrics of each block.
        self.digests = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provtel-background")
        # live metrics
        self.step_duration = meter.create_histogram(
            mc.ML_STEP_DURATION, unit="s", description="Duration of training steps."
        )
        self.steps = meter.create_counter(
            mc.ML_STEPS, unit="{step}", description="Training steps taken."
        )
        self.samples = meter.create_counter(
            mc.ML_SAMPLES, unit="{sample}", description="Training samples processed."
        )
        self.loss_gauge = meter.create_gauge(
            mc.ML_LOSS, unit="1", description="Loss of the latest step."
        )
        self.throughput = meter.create_gauge(
            mc.ML_THROUGHPUT,
            unit="{sample}/s",
            description="Samples per second over the last block.",
        )

    # -- the run ---------------------------------------------------------------------------
    def active(self) -> bool:
        """False in forked children (DataLoader workers: switched off at the fork, without a
        ``getpid`` per hook) and after the run ended."""
        return self.enabled

    def ensure_run(self) -> Context | None:
        """The run's context, creating the run span at the first training activity."""
        if self.run_context is not None:
            return self.run_context
        if not self.active():
            return None
        if pool_worker():
            # A task of a multiprocessing/concurrent.futures pool: part of the parent's run,
            # never a run of its own (provtel.semconv.workers).
            self.enabled = False
            return None
        attributes = {**run_attributes(self.torch), **self.known, **self.pending}
        if self.run_name:
            attributes[sc.ML_RUN_NAME] = self.run_name
        self.pending = {}
        self._run_handle = activity.begin(act.RUN)
        self.run_span = self.tracer.start_span(
            spans.RUN,
            context=launcher_context(),
            start_time=self.started_ns,
            attributes=attributes,
        )
        self.run_context = trace.set_span_in_context(self.run_span, otel_context.Context())
        if threading.current_thread() is threading.main_thread():
            # user spans created from now on are children of the run
            self._context_token = otel_context.attach(self.run_context)
        self._git_thread = threading.Thread(target=self._add_git, name="provtel-git", daemon=True)
        self._git_thread.start()
        if self._flusher_stop is None:
            self._start_idle_flusher()
        for batch in self.param_batches:
            self._send_params(batch)
        return self.run_context

    def _add_git(self) -> None:
        span = self.run_span
        attributes = git_attributes()
        if span is not None and span.is_recording():
            span.set_attributes(attributes)

    def set_run_attributes(self, attributes: dict[str, Any]) -> None:
        """Attributes of the run (hyperparameters, model): set now or when the run starts.

        They are remembered for later runs of the process too (arguments and seeds apply to
        every run; a new optimizer's settings replace the old ones).
        """
        self.known.update(attributes)
        if self.run_span is not None:
            self.run_span.set_attributes(attributes)
        else:
            self.pending.update(attributes)

    def log_params(self, values: dict[str, Any]) -> None:
        """A batch of configuration (``ml.hparam.*``: a framework's arguments, a config file):
        on short ``ml.log`` spans of its own, children of the run, now or when the run starts.
        On the run span a big batch would overflow the SDK's attribute limit per span (128 by
        default), which silently evicts the run's oldest attributes. Remembered for later runs
        of the process, like :meth:`set_run_attributes`."""
        self.param_batches.append(values)
        if self.run_span is not None:
            self._send_params(values)

    def _send_params(self, values: dict[str, Any]) -> None:
        items = list(values.items())
        now = clock.unix_ns()
        for i in range(0, len(items), PARAMS_PER_SPAN):
            span = self.tracer.start_span(
                spans.LOG,
                context=self.run_context,
                start_time=now,
                attributes=dict(items[i : i + PARAMS_PER_SPAN]),
            )
            span.end(end_time=now)

    def finish(self) -> None:
        """End everything at exit (or uninstrument): open step, block, passes, the run."""
        if not self.active():
            return
        if self._flusher_stop is not None:
            self._flusher_stop.set()
            self._idle_wake.set()
            if self._flusher is not None and self._flusher is not threading.current_thread():
                self._flusher.join(timeout=1.0)  # a hand-over in progress completes first
        self.end_run()
        self.digests.shutdown(wait=True)
        self.enabled = False

    def start_run(self, name: str | None, attributes: dict[str, Any]) -> Span | None:
        """Begin a named run now (``provtel.run``); the current run, if any, ends first."""
        self.end_run()
        self.run_name = name
        self.pending.update(attributes)
        self.ensure_run()
        return self.run_span

    def end_run(self, exception: BaseException | None = None) -> None:
        """End the current run: open step, block and passes, then the run span. The next
        training activity starts a new run (several runs in one process)."""
        if not self.active():
            return
        now = perf()
        self.end_step(now)
        self.flush_block()
        self.passes.end_all(now)
        futures.wait(self.pending_digests)
        self.pending_digests.clear()
        git = getattr(self, "_git_thread", None)
        if git is not None:  # a short run must not end before its git commit is known
            git.join(timeout=2.0)
        span = self.run_span
        if span is None:
            return
        span.set_attributes(activity.finish(act.RUN, self._run_handle))
        self._send_gap_logs()
        if self.run_logs:
            span.set_attributes(logs.table(self.torch, self.run_logs, act.TRAINING))
            self.run_logs = []
        end = clock.unix_ns()
        exception = exception or self.exception
        if exception is not None:
            span.record_exception(exception, timestamp=end)
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
        elif self.signal is not None:
            name = signal.Signals(self.signal).name
            span.add_event(
                "exception",
                {sc.EXCEPTION_TYPE: "SystemExit", sc.EXCEPTION_MESSAGE: f"terminated by {name}"},
                timestamp=end,
            )
            span.set_status(Status(StatusCode.ERROR, f"terminated by {name}"))
        elif self.exit_code not in (None, 0):
            span.add_event(
                "exception",
                {sc.EXCEPTION_TYPE: "SystemExit", sc.EXCEPTION_MESSAGE: str(self.exit_code)},
                timestamp=end,
            )
            span.set_status(Status(StatusCode.ERROR, f"sys.exit({self.exit_code!r})"))
        span.end(end_time=end)
        # A fresh start for the next run in this process: its own steps, epochs and context.
        if self._context_token is not None:
            with contextlib.suppress(Exception):  # the user's context moved on meanwhile
                otel_context.detach(self._context_token)  # type: ignore[arg-type]
            self._context_token = None
        self.run_span = None
        self.run_context = None
        self.run_name = None
        self.recorder = StepRecorder()
        self.passes.reset()
        self.last_boundary = 0
        self.primary_optimizer = None
        self.optimizer_seen = False
        self.last_data = None
        self.last_base = None
        self.started_ns = clock.unix_ns()

    # -- passes: the lifecycle is passes.Passes; these are its events from the hooks --------
    @property
    def model_pass(self) -> Pass | None:
        """The open pass from the model's own state, if any."""
        return self.passes.model_pass

    @property
    def training_passes(self) -> int:
        """Training epochs so far in this run."""
        return self.passes.training_passes

    def start_pass(self, loader: Any, start: int | None = None) -> Pass | None:
        """A DataLoader pass begins at perf ns ``start`` (None: now). None: no pass (a
        framework's sanity check, or outside a run)."""
        return self.passes.loader_pass(loader, start)

    def on_mode(self, training: bool) -> None:
        """The outermost ``Module.train(mode)`` / ``.eval()`` call of the script."""
        self.passes.on_mode(training)

    def training_pass(self, now: int) -> Pass | None:
        """The pass a training step outside any DataLoader step belongs to."""
        return self.passes.training_pass(now)

    def mark_training(self, p: Pass | None) -> None:
        """Backward or an optimizer step happened in pass ``p``: it is a training epoch."""
        self.passes.mark_training(p)

    def pass_context(self, p: Pass | None) -> str:
        """The context the values of ``p`` are sent with."""
        return self.passes.context_of(p)

    def end_pass(self, p: Pass, now: int) -> None:
        """End pass ``p`` at ``now``."""
        self.passes.end(p, now)

    def eval_loss(self, value: Any, weight: int, identity: Any, name: str | None) -> None:
        """A loss computed without gradients (an evaluation batch).

        In a DataLoader step it is that batch's loss; outside one it is one batch (one step)
        of the pass :meth:`Passes.loss_pass` chooses: the draining evaluation pass whose
        loader prefetched its last batch, else an evaluation pass from the model's state.
        """
        if self.passes.sanity:
            return
        now = perf()
        rec = self.recorder
        p = self.step_pass if rec.open else None
        if p is not None and not p.ended and p.source != "model":
            if not p.training:
                if rec.loss is None:
                    rec.loss = value
                p.eval_losses.append(value)
                p.eval_weights.append(weight)
            return
        p = self.passes.model_pass
        if (
            p is not None
            and not rec.open
            and self.step_pass is p
            and not self.step_from_loader
            and not p.ended
            and not p.training
            and p.dataset == identity
            and self.block_pass is p
            and rec.block is not None
            and rec.next_index + 1 < self.block_end_index
            and now < self.block_deadline
            and self.passes.loaders_quiet()
        ):
            # the next batch of the same evaluation from the model's state, in the same block
            # (loss_pass + begin_step + end_step of the case below, in one row: per batch)
            rec.record(self.last_boundary or now, now, value, weight)
            self.last_boundary = now
            p.batches += 1
            p.eval_losses.append(value)
            p.eval_weights.append(weight)
            return
        p = self.passes.loss_pass(identity, name, now)
        if p is None:
            return
        if rec.open and self.step_pass is not p:
            self.end_step(now)
        if not rec.open:
            self.begin_step(self.last_boundary or now, p, False)
        rec = self.recorder
        rec.loss = value
        rec.batch_size = weight
        if p.source == "model":
            p.batches += 1  # a DataLoader pass counted its batches as they came
        p.eval_losses.append(value)
        p.eval_weights.append(weight)
        self.end_step(now)

    # -- what the pass lifecycle asks of the steps (passes.Steps) ----------------------------
    def pass_parent(self) -> Context | None:
        """The run's context, starting the run."""
        return self.ensure_run()

    def start_pass_span(self, ctx: Any, attributes: dict[str, Any], start: int | None) -> Span:
        """A pass span (an evaluation until it trains), child of ``ctx``."""
        return self.tracer.start_span(
            spans.EVALUATION,
            context=ctx,
            attributes=attributes,
            start_time=self.recorder.unix_ns(start) if start else clock.unix_ns(),
        )

    def close_steps(self, p: Pass, now: int) -> None:
        """End the open step and hand over the open block when they belong to ``p``."""
        if self.step_pass is p:
            self.end_step(now)
        if self.block_pass is p:
            self.flush_block()

    def end_open_step(self, now: int) -> None:
        """End the open step, whatever its pass."""
        if self.recorder.open:
            self.end_step(now)

    def send_block(
        self, attributes: dict[str, Any], block: Block, losses: list[float], p: Pass
    ) -> None:
        """Send a block that waited for its evaluation pass's context."""
        self._send_block(attributes, block, losses, p)

    def table(self, rows: list[logs.Row], context: str) -> dict[str, Any]:
        """The ``ml.log.*`` attributes of ``rows``."""
        return logs.table(self.torch, rows, context)

    def read(self, values: list[Any]) -> list[float]:
        """Floats for kept values (device tensors in one transfer)."""
        return logs.read_values(self.torch, values)

    def unix_ns(self, perf_ns: int) -> int:
        """Unix ns of a perf ns reading (this run's recorder)."""
        return self.recorder.unix_ns(perf_ns)

    # -- step events from the hooks (which only time them and hand them over) --------------
    def backward_begin(self, tensors: Any, t0: int) -> Any:
        """A backward pass begins at ``t0``: it joins (or opens) a step, whose loss it is
        when the step has none yet. Returns the CUDA event marking its start (or None)."""
        self.in_backward = True  # the idle hand-over leaves the open step alone meanwhile
        rec = self.recorder
        if not rec.open:
            self.ensure_step(t0)
            rec = self.recorder
            if not rec.open:
                return None
        if not self.step_from_loader and not self.optimizer_seen and rec.had_backward:
            # no optimizer: a step runs from one backward to the next
            self.end_step(t0)
            self.begin_step(t0, self.current_pass(), False)
        p = self.step_pass
        if p is None or not p.training:
            self.mark_training(self.current_pass())
        tail = rec.tail_start and not rec.tail_had_backward
        if rec.loss is None or not rec.had_backward or tail:
            if (
                type(tensors) is self._tensor_type
                and self.scaled is None
                and tensors.is_cpu
                and not tensors.dim()
            ):
                value = tensors.tolist()  # the usual CPU loss: read it now
            else:
                value = self._loss_of(tensors)
            if rec.loss is None or not rec.had_backward:
                rec.loss = value
            if tail:
                rec.tail_loss = value
        timer = self.cuda_timer
        if timer is not None and getattr(tensors, "is_cuda", False):
            return timer.mark()
        return None

    def backward_end(self, t0: int, now: int, cuda: Any) -> None:
        """The backward pass that began at ``t0`` ended at ``now``."""
        self.in_backward = False
        rec = self.recorder
        if not rec.open:
            return
        elapsed = now - t0
        rec.backward_ns += elapsed
        rec.had_backward = True
        if rec.tail_start:
            rec.tail_backward_ns += elapsed
            rec.tail_had_backward = True
        if cuda is not None and rec.block is not None:
            rec.block.cuda_intervals.append((len(rec.block), "b", cuda, self.cuda_timer.mark()))

    def optimizer_begin(self, optimizer: Any, now: int) -> None:
        """``optimizer.step()`` begins (an optimizer step pre-hook)."""
        rec = self.recorder
        if rec.tail_start:
            self.before_optimizer(optimizer)
        if not rec.open:
            self.ensure_step(now)
        p = self.step_pass
        if p is None or not p.training:
            self.mark_training(self.current_pass())
        self.optimizer_pre = now
        if self.cuda_timer is not None and _on_cuda(optimizer):
            self.optimizer_event = self.cuda_timer.mark()

    def optimizer_end(self, optimizer: Any, now: int) -> None:
        """``optimizer.step()`` ended (an optimizer step post-hook)."""
        self.optimizer_steps += 1
        self._step_done(optimizer, now)

    def loss_scaled(self, scaled: Any, outputs: Any) -> None:
        """AMP ``GradScaler.scale(outputs)`` returned ``scaled``: backward will see it."""
        if getattr(outputs, "numel", None) is not None:
            self.scaled = (scaled, outputs)

    def scaler_stepped(self, optimizer: Any, steps_before: int, now: int) -> None:
        """``GradScaler.step(optimizer)`` returned; no optimizer step since ``steps_before``
        means it skipped the step (inf/NaN gradients)."""
        self.uses_scaler = True
        if self.optimizer_steps == steps_before:
            self.ensure_step(now)
            self.recorder.skipped = 1
            self._step_done(optimizer, now)

    def _step_done(self, optimizer: Any, now: int) -> None:
        rec = self.recorder
        if not rec.open:
            return
        if self.optimizer_event is not None:
            if rec.block is not None:
                rec.block.cuda_intervals.append(
                    (len(rec.block), "o", self.optimizer_event, self.cuda_timer.mark())
                )
            self.optimizer_event = None
        pre = self.optimizer_pre
        if pre:
            rec.optimizer_ns += now - pre
            self.optimizer_pre = 0
        if not self.optimizer_seen:
            self.optimizer_seen = True
        if not rec.stepped:  # the learning rate of the first optimizer that stepped in the step
            groups = getattr(optimizer, "param_groups", None)
            if groups:
                lr = groups[0].get("lr")
                rec.lr = lr if type(lr) is float else finite_or_nan(lr)
        rec.stepped += (id(optimizer),)
        if not self.step_from_loader:
            self.optimizer_stepped(now)

    def _loss_of(self, tensors: Any) -> Any:
        if isinstance(tensors, (list, tuple)):
            tensors = tensors[0] if len(tensors) == 1 else None
        if tensors is None:
            return None
        scaled = self.scaled
        if scaled is not None and scaled[0] is tensors:
            tensors = scaled[1]  # AMP: record the loss the script computed, not the scaled one
            self.scaled = None
        if tensors.numel() != 1:
            return None
        if tensors.is_cpu:
            # nothing to synchronise with: read it now (tolist: no autograd view, no warning)
            value = tensors.tolist()
            while type(value) is list:
                value = value[0]
            return value
        return tensors.detach()  # read once per block, with the block's other losses

    def loader_begin(self, loader: Any, t0: int) -> Pass | None:
        """The first batch of a DataLoader iteration is asked for at ``t0``: its pass."""
        if self.recorder.open:
            self.end_step(t0)  # a step opened outside this loader ends here
        return self.start_pass(loader, t0)

    def batch_fetched(self, p: Pass, t0: int, t1: int, batch: Any, size: int | None = None) -> None:
        """A batch of pass ``p`` was asked for at ``t0`` and arrived at ``t1``: the open step
        ends at ``t0`` and the batch's step begins there (the hot path). ``size``: its samples
        when the loader's settings say (:func:`loader.batch_sizes`), else read from it."""
        p.batches += 1
        rec = self.loader_step(t0, p)
        rec.data_wait_ns = t1 - t0
        if size is not None:
            rec.batch_size = size
        elif type(batch) in _SEQUENCES and batch and isinstance(batch[0], self._tensor_type):
            first = batch[0]  # the usual (inputs, targets): no torch.Size built
            rec.batch_size = first.size(0) if first.dim() else 1
        else:
            rec.batch_size = batch_size(batch)

    def loader_stopped(self, p: Pass | None, t0: int, exhausted: bool) -> None:
        """No batch came (asked for at ``t0``): the open step ended there; an exhausted
        loader's pass drains (:class:`Passes`)."""
        if p is not None and self.step_pass is p:
            self.end_step(t0)
        self.passes.loader_stopped(p, t0, exhausted)

    def loader_dropped(self, p: Pass) -> None:
        """The iterator of pass ``p`` was dropped: the pass ends (unless a framework's
        evaluation that opened it still runs)."""
        self.passes.loader_dropped(p, perf())

    # -- values, configuration and evaluations from user code and frameworks ----------------
    def log(self, name: str, value: Any, step: int | None, context: str | None) -> bool:
        """A value logged by user code or a framework: kept with the open step's block (or the
        block of the latest steps of a pass that still hands out batches), else the open pass
        (a draining one included), else the run (False: not recorded, e.g. not a number or no
        run). A row named like the evaluation summary's replaces that summary row."""
        if self.passes.sanity or not self.active():
            return False
        kept = logs.loggable(value)
        if kept is None or self.ensure_run() is None:
            return False
        row = (
            str(name),
            kept,
            -1 if step is None else int(step),
            context or logs.USER_CONTEXT.get(),
            clock.unix_ns(),
        )
        rec = self.recorder
        block = rec.block
        owner = self.block_pass
        if block is not None and (rec.open or (block.rows and not (owner and owner.exhausted))):
            block.logs.append(row)
        else:
            owner = self.current_pass() or self.passes.model_pass or self.passes.draining()
            if owner is not None and not owner.ended:
                owner.logs.append(row)
            else:
                owner = None
                self._run_row(row)
        if owner is not None and row[0] == EVAL_LOSS_ROW:
            owner.own_eval_loss = True
        return True

    def _run_row(self, row: logs.Row) -> None:
        """A value logged outside every pass: the latest training epoch's when one ended (its
        epoch cell), else the run's."""
        epochs = self.passes.training_passes
        if not epochs:
            self.run_logs.append(row)
            return
        if self.gap_epoch != epochs - 1:
            self._send_gap_logs()
            self.gap_epoch = epochs - 1
        self.gap_logs.append(row)

    def _send_gap_logs(self) -> None:
        rows, self.gap_logs = self.gap_logs, []
        if not rows or self.run_context is None:
            return
        attributes = {sc.ML_EPOCH: self.gap_epoch, **logs.table(self.torch, rows, act.TRAINING)}
        self.tracer.start_span(
            spans.LOG, context=self.run_context, start_time=rows[0][4], attributes=attributes
        ).end(end_time=rows[-1][4])

    def begin_evaluation(self, context: str | None = None, dataset: Any = None) -> None:
        """A framework evaluates (``context``: ``validation``/``test`` when it knows; None:
        decided like any other evaluation). Passes it opens inherit both and end with it."""
        self.passes.begin_evaluation(context, dataset)

    def end_evaluation(self) -> None:
        """The framework's evaluation is over: the passes it opened end."""
        self.passes.end_evaluation()

    def sanity_check(self, on: bool) -> None:
        """A framework's sanity check (Lightning's validation before training): not recorded."""
        self.passes.sanity = bool(on)

    # -- steps -----------------------------------------------------------------------------
    def begin_step(self, now: int, p: Pass | None, from_loader: bool) -> None:
        if self.block_pass is not p and self.recorder.block is not None:
            self.flush_block()
        rec = self.recorder
        if rec.block is None:
            self.block_pass = p
            self.block_started = now
            self.block_end_index = rec.next_index + self.config.block_steps
            self.block_deadline = now + int(self.config.block_seconds * 1e9)
            self.block_handle = activity.begin(act.STEP_BLOCK)
            self._idle_wake.set()  # once per block: the idle flusher watches it
        rec.begin(now)  # creates the block
        self.step_pass = p
        self.step_from_loader = from_loader
        if p is not None and p.source == "model" and p.training:
            p.batches += 1  # a pass from the model's state: one step is one batch

    def loader_step(self, now: int, p: Pass) -> StepRecorder:
        """A DataLoader's next batch of pass ``p`` arrived: the open step ends at ``now`` and
        the batch's step begins there (the hot path of :meth:`end_step` + :meth:`begin_step`)."""
        rec = self.recorder
        if (
            rec.open
            and self.block_pass is p
            and self.step_from_loader
            and rec.next_index + 1 < self.block_end_index
            and now < self.block_deadline
        ):
            rec.advance(now)  # the usual case: the next step of the same block
            self.last_boundary = now
            return rec
        if rec.open:
            if not self.step_from_loader:
                self.end_step(now)
            else:
                rec.end(now)
                self.last_boundary = now
                if rec.next_index >= self.block_end_index or now >= self.block_deadline:
                    self.flush_block()
        if rec.block is None or self.block_pass is not p:
            self.begin_step(now, p, True)
            return self.recorder
        rec.begin(now)
        self.step_pass = p
        self.step_from_loader = True
        return rec

    def end_step(self, now: int) -> None:
        rec = self.recorder
        if not rec.open:
            return
        if rec.tail_start and not rec.tail_had_backward and not self.step_from_loader:
            now = rec.tail_start  # nothing followed its last optimizer step: it ended there
        rec.end(now)
        self.last_boundary = now
        if rec.next_index >= self.block_end_index or now >= self.block_deadline:
            self.flush_block()

    def optimizer_stepped(self, now: int) -> None:
        """Without a DataLoader: an optimizer finished a step (or GradScaler skipped it) at
        ``now``; what follows may be the start of the next step (:meth:`before_optimizer`)."""
        rec = self.recorder
        rec.tail_start = now
        rec.tail_backward_ns = 0
        rec.tail_had_backward = False
        rec.tail_loss = None

    def before_optimizer(self, optimizer: Any) -> None:
        """Without a DataLoader, an optimizer that already stepped in the open step starts the
        next one: the open step ends where its latest optimizer step ended and what came after
        (backward, loss) moves to the next step."""
        rec = self.recorder
        if not (rec.open and rec.tail_start and id(optimizer) in rec.stepped):
            return
        if self.step_from_loader:
            return
        start, backward, had, loss = (
            rec.tail_start,
            rec.tail_backward_ns,
            rec.tail_had_backward,
            rec.tail_loss,
        )
        rec.backward_ns -= backward
        if had and rec.loss is loss:
            rec.loss = None  # the step's only loss came after its optimizer steps
        rec.tail_had_backward = False
        p = self.step_pass
        self.end_step(start)
        self.begin_step(start, p if p is not None and not p.ended else None, False)
        rec.backward_ns = backward
        rec.had_backward = had
        rec.loss = loss

    def current_pass(self) -> Pass | None:
        p = self.step_pass
        return p if p is not None and not p.ended else None

    def ensure_step(self, now: int) -> None:
        """A backward or optimizer step outside a loader step opens a step (in the model's
        training pass when no DataLoader pass is open)."""
        if not self.recorder.open:
            if self.ensure_run() is None:
                return
            p = self.training_pass(now)
            self.begin_step(self.last_boundary or now, p, False)

    def flush_block(self) -> None:
        with self.step_lock:
            dropped = self.recorder.block
            block = self.recorder.take_block()
            handle, self.block_handle = self.block_handle, []
        if block is not None:
            self._hand_over(block, self.block_pass, handle)
        elif dropped is not None and dropped.logs:
            self._rescue_logs(dropped.logs)  # a block without a finished step: not sent

    def _rescue_logs(self, rows: list[logs.Row]) -> None:
        """Values logged in a block that is dropped without rows go to its pass (or the run)."""
        p = self.block_pass
        if p is not None and not p.ended:
            p.logs.extend(rows)
        else:
            for row in rows:
                self._run_row(row)

    def _hand_over(self, block: Block, p: Pass | None, handle: activity.Handle) -> None:
        if p is None and self.run_span is None:
            return
        attributes, losses = self._block_attributes(block, p, handle)
        if p is not None and p.context is None and not p.training:
            p.pending.append((attributes, block, losses))  # sent once validation/test is known
        else:
            self._send_block(attributes, block, losses, p)

    def flush_idle(self, idle_ns: int, grace_s: float = 0.01) -> bool:
        """Off the training thread: hand over the open block when no step has ended for
        ``idle_ns`` (a pause, an evaluation without steps, a process about to be killed), so
        that the journal holds every step that ended about a second ago. A step still open
        stays open, in a fresh block; without a DataLoader a step that ended at its optimizer
        step and saw nothing since is ended there first (what its next step would do)."""
        rec = self.recorder
        block = rec.block
        if block is None or not self.active() or self.run_span is None:
            return False
        now = perf()
        last = max(self.last_boundary, rec.tail_start)
        if not last or now - last < idle_ns:
            return False
        with self.step_lock:
            if rec.block is not block:
                return False
            if (
                rec.open
                and rec.tail_start
                and not rec.tail_had_backward
                and rec.tail_loss is None
                and not self.in_backward
                and not self.optimizer_pre
                and not self.step_from_loader
            ):
                rec.end(rec.tail_start)
                self.last_boundary = rec.tail_start
            if not block.rows:
                return False
            p = self.block_pass
            handle = self.block_handle
            if rec.open:  # the open step goes on in a new block
                rec.block = Block(block.first)
                self.block_started = now
                self.block_end_index = rec.next_index + self.config.block_steps
                self.block_deadline = now + int(self.config.block_seconds * 1e9)
                self.block_handle = activity.begin(act.STEP_BLOCK)
            else:
                rec.block = None
                self.block_handle = []
        # A hook that read the old block just before the swap appends to it within its
        # time slice: let it finish before the block is sealed.
        time.sleep(grace_s)
        moved = len(block.rows)
        if rec.block is not None and rec.block is not block:
            rec.block.first = block.first + moved
        block.seal()
        self._hand_over(block, p, handle)
        return True

    def _start_idle_flusher(self) -> None:
        """The thread that hands over idle blocks. It polls nothing while steps arrive: it
        sleeps until the open block's idle deadline (the last step end + ``idle_ns``), looks
        again (a step that ended meanwhile moves the deadline), and with no open block waits
        for one to open (:meth:`begin_step` wakes it once per block)."""
        idle_ns = int(min(0.5, self.config.block_seconds) * 1e9)
        stop = self._flusher_stop = threading.Event()
        wake = self._idle_wake

        def loop() -> None:
            while not stop.is_set():
                if not self.active():
                    return
                wake.clear()
                rec = self.recorder
                if rec.block is None:
                    wake.wait()
                    continue
                last = max(self.last_boundary, rec.tail_start) or self.block_started
                delay = last + idle_ns - perf()
                if delay > 0:
                    stop.wait(delay * 1e-9)
                    continue
                try:
                    flushed = self.flush_idle(idle_ns)
                except Exception:
                    logger.exception("provtel: handing over an idle step block failed; stopped")
                    return
                if not flushed:  # nothing to hand over yet (a step still open, no row)
                    stop.wait(idle_ns * 1e-9)

        self._flusher = threading.Thread(target=loop, name="provtel-idle-blocks", daemon=True)
        self._flusher.start()

    def _block_attributes(
        self, block: Block, p: Pass | None, handle: activity.Handle
    ) -> tuple[dict[str, Any], list[float]]:
        if block.cuda_intervals and self.cuda_timer is not None:
            self._apply_cuda_times(block)
        losses = loss_values(self.torch, block.losses)
        block.losses = []  # release the tensors
        put = self._put_column
        attributes: dict[str, Any] = {
            sc.ML_ACTIVITY: act.STEP_BLOCK,
            sc.ML_STEP_FIRST: block.first,
            sc.ML_STEP_COUNT: len(block),
        }
        put(attributes, sc.ML_STEP_START, block.start_ns, columns.INT64)
        put(attributes, sc.ML_STEP_DURATION, seconds(block.duration_ns), columns.FLOAT64)
        # a phase that did not happen in the block (no backward in an evaluation, no optimizer)
        # leaves no all-zero array, so the run folder has no series for it
        if any(block.backward_ns):
            put(attributes, sc.ML_STEP_BACKWARD, seconds(block.backward_ns), columns.FLOAT64)
        if any(block.optimizer_ns):
            put(attributes, sc.ML_STEP_OPTIMIZER, seconds(block.optimizer_ns), columns.FLOAT64)
        if p is not None and p.epoch is not None:
            attributes[sc.ML_EPOCH] = p.epoch
        elif p is not None and self.training_passes:
            attributes[sc.ML_EPOCH] = self.training_passes - 1
        if any(block.data_wait_ns):
            put(attributes, sc.ML_STEP_DATA_WAIT, seconds(block.data_wait_ns), columns.FLOAT64)
        if any(v == v for v in losses):  # not all NaN
            put(attributes, sc.ML_STEP_LOSS, losses, columns.FLOAT64)
        if any(v == v for v in block.lr):
            put(attributes, sc.ML_STEP_LEARNING_RATE, block.lr, columns.FLOAT64)
        if any(b >= 0 for b in block.batch_size):
            put(attributes, sc.ML_STEP_BATCH_SIZE, block.batch_size, columns.INT64)
        if self.uses_scaler:
            put(attributes, sc.ML_STEP_SKIPPED, block.skipped, columns.INT64)
        attributes.update(activity.finish(act.STEP_BLOCK, handle))
        return attributes, losses

    def _put_column(self, attributes: dict[str, Any], name: str, values: Any, dtype: str) -> None:
        """A per-step array as a packed column (:mod:`provtel.semconv.columns`): one string the
        SDK checks once, instead of an array it checks element by element (~4 ms a block of
        1,000 steps and 10 arrays). Plain arrays when an attribute length limit is set (the SDK
        would cut the string) or a value cannot be packed."""
        if self._pack:
            try:
                attributes[columns.packed_name(name)] = columns.encode(values, dtype)
                return
            except (TypeError, ValueError, OverflowError):
                pass
        attributes[name] = values

    def _send_block(
        self, attributes: dict[str, Any], block: Block, losses: list[float], p: Pass | None
    ) -> None:
        context = self.pass_context(p)
        attributes[sc.ML_CONTEXT] = context
        parent = p.span if p is not None else self.run_span
        if parent is None:
            return
        if block.logs:
            attributes.update(logs.table(self.torch, block.logs, context))
            block.logs = []
        start = block.start_ns[0]
        end = block.start_ns[-1] + block.duration_ns[-1]
        span = self.tracer.start_span(
            spans.STEP_BLOCK,
            context=trace.set_span_in_context(parent),
            start_time=start,
            attributes=attributes,
        )
        span.end(end_time=end)
        if self.config.live_metrics:
            self._record_metrics(context, block, losses, end - start)

    def _record_metrics(
        self, context: str, block: Block, losses: list[float], span_ns: int
    ) -> None:
        """The block's live metrics: a handful of SDK calls per block (one costs ~5-9 µs), never
        one per step (the step series of the PROV document has every step)."""
        labels = {sc.ML_CONTEXT: context}
        steps = len(block)
        durations = block.duration_ns
        if steps:
            # one point per block: the mean step time of the block (per-step values: PROV)
            self.step_duration.record(sum(durations) * 1e-9 / steps, labels)
        self.steps.add(steps, labels)
        samples = sum(b for b in block.batch_size if b > 0)
        if samples:
            self.samples.add(samples, labels)
            if span_ns > 0:
                self.throughput.set(samples / (span_ns * 1e-9), labels)
        for v in reversed(losses):
            if v == v:
                self.loss_gauge.set(v, labels)
                break

    def _apply_cuda_times(self, block: Block) -> None:
        times = self.cuda_timer.read_ns([(k, s, e) for _i, k, s, e in block.cuda_intervals])
        backward = [0] * len(block)
        optimizer = [0] * len(block)
        for (i, kind, _s, _e), ns in zip(block.cuda_intervals, times, strict=True):
            if i < len(block):
                (backward if kind == "b" else optimizer)[i] += ns
        block.backward_ns, block.optimizer_ns = backward, optimizer
        block.cuda_intervals = []


_SEQUENCES = (tuple, list)


def batch_size(batch: Any, samples: bool = False) -> int:
    """Samples in a batch: the first dimension of its first tensor (-1 when unknown). With
    ``samples`` (a DataLoader's collate function of the script's own, such as ``list``), a list
    whose items are all tuples or all dicts is a list of samples: its length. Not for the
    default collate, whose list of batched dicts (``(inputs, targets)`` dict samples) would
    look the same."""
    for _ in range(4):  # tensor, or a tuple/list/dict nesting tensors
        shape = getattr(batch, "shape", None)
        if shape is not None:
            return int(shape[0]) if len(shape) else 1
        if samples and isinstance(batch, list) and batch and _samples(batch):
            return len(batch)
        if isinstance(batch, (list, tuple)) and batch:
            batch = batch[0]
        elif isinstance(batch, dict) and batch:
            batch = next(iter(batch.values()))
        else:
            return -1
    return -1


def _samples(items: list[Any]) -> bool:
    """A list of samples: every item a tuple, or every item a dict."""
    kind = type(items[0])
    if not issubclass(kind, (tuple, dict)):
        return False
    return all(type(item) is kind for item in items)


def _on_cuda(optimizer: Any) -> bool:
    groups = getattr(optimizer, "param_groups", None) or [{}]
    params = groups[0].get("params") or []
    return bool(params) and bool(getattr(params[0], "is_cuda", False))


def launcher_context() -> otel_context.Context:
    """The parent a launcher passed in ``TRACEPARENT`` (W3C trace context), else none.

    A workflow engine or a job script that traces its own steps hands its span to the training
    process this way; the run then joins that trace instead of starting one.
    """
    traceparent = os.environ.get("TRACEPARENT")
    if not traceparent:
        return otel_context.Context()
    carrier = {"traceparent": traceparent, "tracestate": os.environ.get("TRACESTATE", "")}
    return TraceContextTextMapPropagator().extract(carrier, context=otel_context.Context())


def _off_in_forked_children(tracker: Tracker) -> None:
    """Switch ``tracker`` off in every child forked from this process (DataLoader workers,
    ``multiprocessing`` pools): a child records nothing of its parent's run. A weak reference,
    so that a tracker of an ended ``instrument()`` is not kept alive by the fork handler."""
    ref = weakref.ref(tracker)

    def forked() -> None:
        t = ref()
        if t is not None:
            t.enabled = False

    os.register_at_fork(after_in_child=forked)


def loss_values(torch: Any, losses: list[Any]) -> list[float]:
    """Read the block's losses, NaN where there was none. A CPU loss was read in its step (a
    float); the tensors kept per step (detached device losses, so that a device gets no
    synchronisation per step; CPU tensors a hook could not read) are read in one
    ``torch.stack`` per kind."""
    nan = float("nan")
    tensors = [i for i, v in enumerate(losses) if v is not None and type(v) is not float]
    if not tensors:
        return [nan if v is None else v for v in losses]
    out = [nan] * len(losses)
    device = [i for i in tensors if getattr(losses[i], "is_cuda", False)]
    if device:
        values = torch.stack([losses[i].float().reshape(()) for i in device]).tolist()
        for i, v in zip(device, values, strict=True):
            out[i] = float(v)
    on_cpu = [i for i in tensors if not getattr(losses[i], "is_cuda", False)]
    if on_cpu:
        try:
            with torch.no_grad():  # no graph for the stack of losses that require grad
                values = torch.stack([losses[i] for i in on_cpu]).tolist()
        except Exception:  # mixed shapes or types: one by one
            values = [float(losses[i]) for i in on_cpu]
        for i, v in zip(on_cpu, values, strict=True):
            out[i] = float(v)
    for i, v in enumerate(losses):
        if type(v) is float:
            out[i] = v
    return out


def run_attributes(torch: Any) -> dict[str, Any]:
    """What identifies the run: script, command line, Python, torch, CUDA, device."""
    argv = list(sys.argv) if sys.argv else []
    script = argv[0] if argv and argv[0] not in ("-c", "-m", "-", "") else ""
    attributes: dict[str, Any] = {
        sc.ML_ACTIVITY: act.RUN,
        sc.ML_RUN_NAME: os.environ.get("OTEL_PYTHON_PROVTEL_RUN_NAME")
        or (Path(script).stem if script else "python"),
        sc.PROCESS_COMMAND_ARGS: redact_argv(argv),  # no secret option values
        sc.PROCESS_RUNTIME_NAME: sys.implementation.name,
        sc.PROCESS_RUNTIME_VERSION: ".".join(map(str, sys.version_info[:3])),
        sc.ML_FRAMEWORK_NAME: "torch",
        sc.ML_FRAMEWORK_VERSION: str(torch.__version__),
    }
    if script:
        attributes[sc.ML_RUN_SCRIPT] = os.path.abspath(script)
    cuda = getattr(torch.version, "cuda", None)
    if cuda:
        attributes[sc.ML_CUDA_VERSION] = str(cuda)
    return attributes


def git_attributes() -> dict[str, Any]:
    """Commit, branch, remote and dirty state of the script's repository (empty outside one)."""
    script = sys.argv[0] if sys.argv and sys.argv[0] not in ("-c", "-m", "-", "") else ""
    where = os.path.dirname(os.path.abspath(script)) if script else os.getcwd()

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", where, *args], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    if not revision:
        return {}
    out: dict[str, Any] = {sc.VCS_REF_HEAD_REVISION: revision}
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        out[sc.VCS_REF_HEAD_NAME] = branch
    remote = git("remote", "get-url", "origin")
    if remote:
        out[sc.VCS_REPOSITORY_URL_FULL] = redact_url(remote)  # no userinfo, no tokens
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is not None:
        out[sc.ML_VCS_DIRTY] = bool(status)
    return out


def format_exception(exc: BaseException) -> str:
    """One-line description used in logs."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


Context = otel_context.Context
