"""The PyTorch instrumentor (see the package documentation, :mod:`provtel.instrumentation.torch`).

Imported only when the instrumentor is loaded: ``opentelemetry-instrument``'s launcher imports the
package for its environment variables alone, which must stay cheap.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from packaging.version import InvalidVersion, Version

from provtel.instrumentation import clock
from provtel.instrumentation.torch import checkpoint, frameworks, hparams, loader
from provtel.instrumentation.torch._guard import Guard
from provtel.instrumentation.torch.config import Config, metric_backend_configured
from provtel.instrumentation.torch.hparams import finite_or_nan
from provtel.instrumentation.torch.package import _instruments
from provtel.instrumentation.torch.tracker import Tracker, perf
from provtel.instrumentation.torch.version import __version__
from provtel.semconv.workers import silent

#: The package's name: tracer and meter scope, logger, the folder torch.compile skips.
_PACKAGE = "provtel.instrumentation.torch"

logger = logging.getLogger(_PACKAGE)

__all__ = ["TorchInstrumentor"]

_SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGHUP", "SIGINT")) if s is not None
)


class TorchInstrumentor(BaseInstrumentor):
    """Traces PyTorch training runs (see the module documentation)."""

    def __init__(self) -> None:
        # BaseInstrumentor is a singleton: ``TorchInstrumentor()`` returns the same object and
        # Python runs __init__ again on it; keep the state (patches, tracker) of the first one.
        if getattr(self, "_initialised", False):
            return
        self._initialised = True
        self._tracker: Tracker | None = None
        self._patches: list[tuple[Any, str]] = []
        self._hooks: list[Any] = []
        self._active = False
        self._restore: list[Any] = []
        self._tracer: Any = None
        self._meter: Any = None
        self._config = Config()
        self._optimizers = 0
        self._early: dict[str, Any] = {}
        self._started_ns = clock.unix_ns()

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    # -- instrument / uninstrument ---------------------------------------------------------
    def _instrument(self, **kwargs: Any) -> None:
        if not _torch_installed():
            # The distribution's gate also admits the hardware instrumentors without torch.
            logger.debug("provtel: torch >= 2.1 is not installed; PyTorch instrumentation off")
            return
        self._active = True
        self._config = Config.from_env(
            **{
                k: kwargs.get(k)
                for k in (
                    "block_steps",
                    "block_seconds",
                    "checkpoint_digest",
                    "cuda_events",
                    "live_metrics",
                )
            }
        )
        if self._config.live_metrics is None:  # a live backend, or only the PROV document?
            live = kwargs.get("meter_provider") is not None or metric_backend_configured()
            self._config = dataclasses.replace(self._config, live_metrics=live)
        self._tracer = trace.get_tracer(
            _PACKAGE, __version__, tracer_provider=kwargs.get("tracer_provider")
        )
        self._meter = metrics.get_meter(
            _PACKAGE, __version__, meter_provider=kwargs.get("meter_provider")
        )
        self._started_ns = clock.unix_ns()
        self._watch_exit()
        atexit.register(self._at_exit)
        for module, hook in (
            ("torch", self._on_torch),
            ("random", self._on_random),
            ("numpy", self._on_numpy),
            ("numpy.random", self._on_numpy_random),
            ("argparse", self._on_argparse),
            ("torch._dynamo", self._on_dynamo),
            ("safetensors.torch", self._on_safetensors),
            ("torch.distributed.autograd", self._on_dist_autograd),
            ("torch.distributed.optim", self._on_dist_optim),
        ):
            wrapt.register_post_import_hook(self._guarded(hook), module)
        frameworks.install()  # Lightning, HF Trainer: when the script imports them

    def _uninstrument(self, **kwargs: Any) -> None:
        self._at_exit()
        self._active = False
        frameworks.uninstall()
        atexit.unregister(self._at_exit)
        for owner, name in reversed(self._patches):
            unwrap(owner, name)
        self._patches.clear()
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        self._tracker = None

    def _guarded(self, hook: Any) -> Any:
        guard = Guard(f"post-import {hook.__name__}")

        def run(module: Any) -> None:
            if not (self._active and guard.ok):
                return
            try:
                hook(module)
            except Exception:
                guard.fail()

        return run

    def _replace(self, owner: Any, name: str, make: Any) -> None:
        """Replace ``owner.name`` by the plain function ``make(original)``: for a hook that runs
        every step, a call costs a fraction of a wrapt wrapper's."""
        original = getattr(owner, name)
        setattr(owner, name, functools.wraps(original)(make(original)))
        self._restore.append(lambda: setattr(owner, name, original))

    def _wrap(self, owner: Any, name: str, wrapper: Any) -> None:
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        self._patches.append((owner, name))

    @property
    def tracker(self) -> Tracker | None:
        """The tracker of the current process (None before torch is imported)."""
        return self._tracker

    # -- how the process ends --------------------------------------------------------------
    def _at_exit(self) -> None:
        if self._tracker is not None:
            try:
                self._tracker.finish()
            except Exception:
                logger.exception("provtel: could not end the run cleanly")

    def _note(self, **outcome: Any) -> None:
        target = self._tracker
        if target is not None:
            for key, value in outcome.items():
                if getattr(target, key) is None:
                    setattr(target, key, value)

    def _watch_exit(self) -> None:
        previous_hook = sys.excepthook

        def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            self._note(exception=value)
            previous_hook(kind, value, tb)

        sys.excepthook = excepthook
        self._restore.append(lambda: setattr(sys, "excepthook", previous_hook))

        previous_exit = sys.exit

        def exit_(status: Any = None) -> Any:
            self._note(exit_code=status)
            return previous_exit(status)

        sys.exit = exit_
        self._restore.append(lambda: setattr(sys, "exit", previous_exit))

        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _SIGNALS:
            previous = signal.getsignal(signum)
            if previous in (signal.SIG_IGN, None):
                continue
            signal.signal(signum, self._signal_handler(signum, previous))
            self._restore.append(lambda s=signum, p=previous: signal.signal(s, p))

    def _signal_handler(self, signum: int, previous: Any) -> Any:
        def handler(received: int, frame: Any) -> None:
            if received != signal.SIGINT and silent():
                # A pool worker (or a multiprocessing child still starting) that its pool
                # terminates: the signal acts as without provtel (provtel.semconv.workers).
                signal.signal(received, previous)
                signal.raise_signal(received)
                return
            if received != signal.SIGINT:  # Ctrl-C arrives as KeyboardInterrupt (excepthook)
                self._note(signal=received)
            if callable(previous):
                previous(received, frame)
            else:  # the default action, but unwinding so that exit handlers run
                raise SystemExit(128 + received)

        return handler

    # -- post-import hooks -------------------------------------------------------------------
    def _on_random(self, module: Any) -> None:
        self._wrap(module, "seed", self._seed_wrapper("random"))

    def _on_numpy(self, module: Any) -> None:
        memmap = getattr(module, "memmap", None)
        original = memmap.__dict__.get("__new__") if memmap is not None else None
        if isinstance(original, staticmethod):
            self._memmap(memmap, original)

    def _on_numpy_random(self, module: Any) -> None:
        # a hook of its own: numpy 2 imports numpy.random lazily, and reading ``numpy.random``
        # in the numpy hook would import it into every torch script (~10 ms)
        self._wrap(module, "seed", self._seed_wrapper("numpy"))

    def _memmap(self, memmap: Any, original: Any) -> None:
        """A ``numpy.memmap`` opened: the batch source of hand-batched scripts (nanoGPT's
        ``get_batch`` maps ``train.bin`` / ``val.bin`` for every batch)."""
        guard = Guard("numpy.memmap")
        new = original.__func__

        @functools.wraps(new)
        def __new__(subtype: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
            result = new(subtype, filename, *args, **kwargs)
            tracker = self._tracker
            if guard.ok and tracker is not None and tracker.enabled:
                try:
                    if isinstance(filename, (str, os.PathLike)):
                        path = os.path.abspath(os.fspath(filename))
                        tracker.last_data = (("file", path), os.path.basename(path))
                except Exception:
                    guard.fail()
            return result

        memmap.__new__ = staticmethod(__new__)
        self._restore.append(lambda: setattr(memmap, "__new__", original))

    def _on_safetensors(self, module: Any) -> None:
        tracker = self._tracker
        if tracker is None or not hasattr(module, "save_file"):
            return  # not yet (half-imported while it imports torch): its post-import hook will
        if not self._once("safetensors.torch"):
            return
        for name, operation, position, keyword in (
            ("save_file", "save", 1, "filename"),
            ("load_file", "load", 0, "filename"),
            ("save_model", "save", 1, "filename"),
            ("load_model", "load", 1, "filename"),
        ):
            if hasattr(module, name):
                self._wrap(
                    module,
                    name,
                    checkpoint.wrap(tracker, operation, position, "safetensors", keyword),
                )

    def _once(self, name: str) -> bool:
        """True the first time a late hook (after torch's) is installed for ``name``; the
        module may have been imported by torch itself, before the tracker existed."""
        done = self.__dict__.setdefault("_late_hooks", set())
        if self._tracker is None or name in done:
            return False
        done.add(name)
        self._restore.append(lambda: done.discard(name))
        return True

    def _on_dist_autograd(self, module: Any) -> None:
        """``torch.distributed.autograd.backward(context_id, roots)``: a backward step."""
        tracker = self._tracker
        if tracker is None or not hasattr(module, "backward"):
            return
        if not self._once("torch.distributed.autograd"):
            return
        make = self._backward(tracker, roots_arg=1)
        self._replace(module, "backward", make)

    def _on_dist_optim(self, module: Any) -> None:
        """``DistributedOptimizer.step(context_id)``: an optimizer step (it is no
        ``torch.optim.Optimizer``, so the optimizer hooks do not see it)."""
        tracker = self._tracker
        optimizer = getattr(module, "DistributedOptimizer", None)
        if tracker is None or optimizer is None:
            return
        if not self._once("torch.distributed.optim"):
            return
        pre, post = self._optimizer_pre(tracker), self._optimizer_post(tracker)

        def step(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            pre(instance, args, kwargs)
            result = wrapped(*args, **kwargs)
            post(instance, args, kwargs)
            return result

        self._wrap(optimizer, "step", step)

    def _on_argparse(self, module: Any) -> None:
        guard = Guard("argparse")

        def parse_known_args(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            result = wrapped(*args, **kwargs)
            if guard.ok:
                try:
                    self._set_run(hparams.namespace_hparams(result[0]))
                except Exception:
                    guard.fail()
            return result

        self._wrap(module.ArgumentParser, "parse_known_args", parse_known_args)

    def _set_run(self, attributes: dict[str, Any]) -> None:
        if self._tracker is not None:
            self._tracker.set_run_attributes(attributes)
        else:
            self._early.update(attributes)

    def _seed_wrapper(self, source: str) -> Any:
        guard = Guard(f"{source} seed")

        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if guard.ok:
                try:
                    seed = args[0] if args else next(iter(kwargs.values()), None)
                    if seed is not None:
                        self._set_run(
                            {f"{hparams.PREFIX}seed.{source}": hparams.attribute_value(seed)}
                        )
                except Exception:
                    guard.fail()
            return wrapped(*args, **kwargs)

        return wrapper

    def _on_dynamo(self, module: Any) -> None:
        # torch.compile must neither trace nor compile the hooks (graph breaks, extra graphs):
        # it skips the files of this package, as it skips torch's own. torch._dynamo is only
        # imported by scripts that compile (importing it costs about a second).
        importlib.import_module("torch._dynamo.trace_rules").add(_PACKAGE)

    def _on_torch(self, torch: Any) -> None:
        tracker = Tracker(self._tracer, self._meter, self._config, torch)
        tracker.started_ns = self._started_ns
        tracker.pending.update(self._early)
        self._early = {}
        self._optimizers = 0
        self._tracker = tracker
        if self._config.cuda_events and torch.cuda.is_available():
            from provtel.instrumentation.torch.cuda import cuda_timer

            tracker.cuda_timer = cuda_timer(torch)

        self._wrap(torch, "manual_seed", self._seed_wrapper("torch"))
        self._wrap(torch.utils.data.DataLoader, "__iter__", loader.wrap_iter(tracker))
        self._replace(torch.autograd, "backward", self._backward(tracker))
        self._wrap(torch, "save", checkpoint.wrap(tracker, "save", 1))
        self._wrap(torch, "load", checkpoint.wrap(tracker, "load", 0))
        self._wrap(torch.optim.Optimizer, "__init__", self._optimizer_init(tracker))
        self._wrap(torch.optim.lr_scheduler.LRScheduler, "__init__", self._scheduler_init(tracker))
        self._wrap(torch.amp.GradScaler, "scale", self._scaler_scale(tracker))
        self._wrap(torch.amp.GradScaler, "step", self._scaler_step(tracker))
        optim = importlib.import_module("torch.optim.optimizer")  # deleted from torch.optim
        self._hooks.append(optim.register_optimizer_step_pre_hook(self._optimizer_pre(tracker)))
        self._hooks.append(optim.register_optimizer_step_post_hook(self._optimizer_post(tracker)))
        self._replace(torch.nn.Module, "train", self._module_train(tracker))
        self._install_losses(torch, tracker)
        for name, late in (
            ("torch.distributed.autograd", self._on_dist_autograd),
            ("torch.distributed.optim", self._on_dist_optim),
            ("safetensors.torch", self._on_safetensors),
        ):
            module = sys.modules.get(name)
            if module is not None:
                late(module)  # imported before torch's hooks (by torch itself)

    # -- model state: train/eval mode and the losses computed without gradients -------------
    def _module_train(self, tracker: Tracker) -> Any:
        guard = Guard("Module.train")

        def make(wrapped: Any) -> Any:
            depth = [0]

            def train(module: Any, mode: bool = True) -> Any:
                if depth[0]:
                    return wrapped(module, mode)  # a child of the module being switched
                depth[0] += 1
                try:
                    result = wrapped(module, mode)
                finally:
                    depth[0] -= 1
                if guard.ok and tracker.enabled:
                    try:
                        if tracker.active():
                            tracker.on_mode(bool(mode))
                    except Exception:
                        guard.fail()
                return result

            return train

        return make

    def _install_losses(self, torch: Any, tracker: Tracker) -> None:
        from provtel.instrumentation import _losses

        is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
        if is_compiling is None:
            return
        functional = torch.nn.functional
        for name in _losses.FUNCTIONAL_LOSSES:
            if hasattr(functional, name):
                self._replace(functional, name, lambda f: _losses.functional(f, is_compiling))
        base = torch.nn.modules.loss._Loss
        base.__call__ = _losses.module_call(
            torch.nn.Module.__call__, is_compiling, torch.is_grad_enabled
        )
        self._restore.append(lambda: delattr(base, "__call__"))
        _losses.state.sink = self._loss_sink(tracker)
        self._restore.append(lambda: setattr(_losses.state, "sink", None))

    def _loss_sink(self, tracker: Tracker) -> Any:
        """What a loss computed without gradients hands to the tracker (once per evaluation
        batch: the fewest torch calls that give its value, weight and data)."""
        guard = Guard("loss")

        def sink(result: Any, args: Any, kwargs: Any) -> None:
            if not (guard.ok and tracker.enabled):
                return
            try:
                if result.is_cpu:
                    try:
                        value = result.item()  # a loss of more than one element raises
                    except RuntimeError:
                        return
                    if type(value) is not float:
                        value = float(value)
                elif result.numel() != 1:
                    return
                else:
                    value = result.detach()  # read once per block: no synchronisation
                first = args[0] if args else kwargs.get("input")
                shape = getattr(first, "shape", None)  # not len(): Tensor.__len__ is Python
                weight = int(shape[0]) if shape else 1
                target = args[1] if len(args) > 1 else kwargs.get("target")
                identity, name = _data_identity(tracker, target)
                tracker.eval_loss(value, weight, identity, name)
            except Exception:
                guard.fail()

        return sink

    # -- training hooks ----------------------------------------------------------------------
    def _backward(self, tracker: Tracker, roots_arg: int = 0) -> Any:
        """``torch.autograd.backward`` (what ``Tensor.backward`` calls) as two events.

        The usual step (the first backward of a DataLoader batch's step in a training pass, a
        scalar CPU loss, no CUDA events, no AMP scaling) is handled here, inline: two clock
        reads, the loss read with ``item()`` (cheaper than keeping the tensor for a
        ``torch.stack`` at block close, and it keeps no graph alive) and a few stores. Anything
        else goes through :meth:`Tracker.backward_begin` / :meth:`Tracker.backward_end`.
        """
        guard = Guard("backward" if not roots_arg else "distributed autograd backward")
        keyword = "roots" if roots_arg else "tensors"
        tensor_type = tracker._tensor_type
        fast_ok = not roots_arg

        def make(wrapped: Any) -> Any:
            def backward(*args: Any, **kwargs: Any) -> Any:
                if not (guard.ok and tracker.enabled):
                    return wrapped(*args, **kwargs)
                t0 = perf()
                rec = tracker.recorder
                p = tracker.step_pass
                if (
                    fast_ok
                    and rec.open
                    and tracker.step_from_loader
                    and not rec.had_backward
                    and not rec.tail_start
                    and p is not None
                    and p.training
                    and tracker.cuda_timer is None
                    and tracker.scaled is None
                    and args
                ):
                    try:
                        loss = args[0]
                        if type(loss) is tensor_type and loss.is_cpu and not loss.dim():
                            # a CPU scalar: read now (~0.3-0.5 µs; no device to wait for,
                            # and no tensor, graph or GC-tracked row kept until block close)
                            rec.loss = loss.item()
                        else:
                            rec.loss = tracker._loss_of(loss)
                        tracker.in_backward = True
                    except Exception:
                        guard.fail()
                        return wrapped(*args, **kwargs)
                    try:
                        return wrapped(*args, **kwargs)
                    finally:
                        rec.backward_ns += perf() - t0
                        rec.had_backward = True
                        tracker.in_backward = False
                token = None
                try:
                    tensors = args[roots_arg] if len(args) > roots_arg else kwargs.get(keyword)
                    token = tracker.backward_begin(tensors, t0)
                except Exception:
                    guard.fail()
                result = wrapped(*args, **kwargs)
                try:
                    tracker.backward_end(t0, perf(), token)
                except Exception:
                    guard.fail()
                return result

            return backward

        return make

    def _optimizer_pre(self, tracker: Tracker) -> Any:
        guard = Guard("optimizer step (pre)")

        def pre(optimizer: Any, args: Any, kwargs: Any) -> None:
            if guard.ok and tracker.enabled:
                rec = tracker.recorder
                p = tracker.step_pass
                if (
                    rec.open
                    and not rec.tail_start
                    and p is not None
                    and p.training
                    and tracker.cuda_timer is None
                ):
                    tracker.optimizer_pre = perf()  # the usual step (optimizer_begin, inlined)
                    return
                try:
                    tracker.optimizer_begin(optimizer, perf())
                except Exception:
                    guard.fail()

        return pre

    def _optimizer_post(self, tracker: Tracker) -> Any:
        guard = Guard("optimizer step (post)")

        def post(optimizer: Any, args: Any, kwargs: Any) -> None:
            if guard.ok and tracker.enabled:
                now = perf()
                rec = tracker.recorder
                try:
                    if (
                        rec.open
                        and tracker.step_from_loader
                        and not rec.stepped
                        and tracker.optimizer_event is None
                        and tracker.optimizer_seen
                    ):
                        # the usual step: its one optimizer step (optimizer_end, inlined)
                        tracker.optimizer_steps += 1
                        pre = tracker.optimizer_pre
                        if pre:
                            rec.optimizer_ns += now - pre
                            tracker.optimizer_pre = 0
                        groups = optimizer.param_groups
                        if groups:
                            lr = groups[0].get("lr")
                            rec.lr = lr if type(lr) is float else finite_or_nan(lr)
                        rec.stepped = (id(optimizer),)
                        return
                    tracker.optimizer_end(optimizer, now)
                except Exception:
                    guard.fail()

        return post

    def _scaler_scale(self, tracker: Tracker) -> Any:
        def scale(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            result = wrapped(*args, **kwargs)
            tracker.loss_scaled(result, args[0] if args else kwargs.get("outputs"))
            return result

        return scale

    def _scaler_step(self, tracker: Tracker) -> Any:
        guard = Guard("GradScaler.step")

        def step(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            optimizer = args[0] if args else kwargs.get("optimizer")
            before = tracker.optimizer_steps
            if guard.ok and tracker.enabled:
                try:
                    tracker.before_optimizer(optimizer)  # a skipped step calls no optimizer hook
                except Exception:
                    guard.fail()
            result = wrapped(*args, **kwargs)
            if guard.ok and tracker.enabled:
                try:
                    tracker.scaler_stepped(optimizer, before, perf())
                except Exception:
                    guard.fail()
            return result

        return step

    def _optimizer_init(self, tracker: Tracker) -> Any:
        guard = Guard("optimizer construction")

        def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            module = caller = None
            if guard.ok and tracker.active():
                try:
                    # before ``model.parameters()`` is consumed (the model is found without
                    # patching nn.Module, which torch.compile guards on)
                    module = hparams.module_of_generator(args[0] if args else kwargs.get("params"))
                    caller = sys._getframe(1)
                except Exception:
                    guard.fail()
            result = wrapped(*args, **kwargs)
            if guard.ok and tracker.active():
                try:
                    self._optimizers += 1
                    # an optimizer exists: without a DataLoader a step is an optimizer step
                    tracker.optimizer_seen = True
                    found = hparams.optimizer_hparams(instance, self._optimizers)
                    if self._optimizers == 1:
                        if module is None:
                            module = hparams.module_in_frames(instance, caller, tracker.torch)
                        if module is not None:
                            found.update(hparams.model_attributes(module))
                    tracker.set_run_attributes(found)
                except Exception:
                    guard.fail()
            del caller
            return result

        return init

    def _scheduler_init(self, tracker: Tracker) -> Any:
        guard = Guard("LR scheduler construction")

        def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            result = wrapped(*args, **kwargs)
            if guard.ok and tracker.active():
                try:
                    tracker.set_run_attributes(hparams.scheduler_hparams(instance))
                except Exception:
                    guard.fail()
            return result

        return init


def _data_identity(tracker: Tracker, target: Any) -> tuple[Any, str | None]:
    """Which data an evaluation batch came from: the tensor the targets are a slice of
    (word_language_model's ``val_data``), else the file the latest batch was mapped from
    (nanoGPT's ``val.bin``), else unknown."""
    base = getattr(target, "_base", None)
    if base is not None:
        seen = tracker.last_base  # (weak reference, numel, identity, name): the usual batch
        if seen is not None and seen[0]() is base:
            if seen[1] > target.numel():
                return seen[2], seen[3]
        elif base.numel() > target.numel():
            key = ("tensor", id(base), base.data_ptr(), tuple(base.shape))
            name = tracker.data_names.get(key)
            if name is None:
                name = tracker.data_names[key] = _name_in_frames(base) or "tensor"
            tracker.last_base = (weakref.ref(base), base.numel(), key, name)
            return key, name
    if tracker.last_data is not None:
        identity, name = tracker.last_data
        return identity, name
    return None, None


def _name_in_frames(value: Any, depth: int = 12) -> str | None:
    """The name the script gives ``value``: a global of a calling frame, else a local."""
    frame: Any = sys._getframe(2)
    frames = []
    while frame is not None and depth > 0:
        frames.append(frame)
        frame, depth = frame.f_back, depth - 1
    for scope in ("f_globals", "f_locals"):
        for f in frames:
            if f.f_globals.get("__name__", "").startswith(("torch", "provtel")):
                continue
            for key, candidate in list(getattr(f, scope).items()):
                if candidate is value and not key.startswith("_"):
                    return str(key)
    return None


def _torch_installed() -> bool:
    """torch >= 2.1 is installed (checked without importing it)."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        return Version(version).release >= (2, 1)
    except InvalidVersion:
        return True  # a local build with an odd version string: let the hooks decide
