"""The event interface of the PyTorch instrumentation, for framework integrations and the API.

Framework adapters (Lightning, Hugging Face) and ``provtel.log_*`` call these functions so that
what they know lands on the same passes and steps as the plain-torch hooks. Every function is
safe to call at any time: without an active PyTorch instrumentation (not instrumented, torch not
imported yet, a DataLoader worker, after the run ended) it does nothing and returns False.

* :func:`log` — a value (a number or a one-element tensor, read once per block on devices);
  it joins the open step block, else the open pass, else the run;
* :func:`params` — configuration (a mapping, dataclass, ``argparse.Namespace``, OmegaConf
  config, an object with ``to_dict()``) as run hyperparameters ``ml.hparam.<prefix><key>``,
  secrets redacted;
* :func:`artifact` — a file or folder saved or loaded (``kind``: model, dataset, artifact);
* :func:`begin_evaluation` / :func:`end_evaluation` (or :func:`evaluation`) — a framework
  evaluates: the passes it opens get ``context`` (``validation``/``test``; None: decided by the
  data and what follows, like any evaluation) and ``dataset`` as their data identity;
* :func:`sanity_check` — passes, losses and values are not recorded while it is on;
* :func:`framework_loader` — the iterator of a framework's own loader that drives a DataLoader
  inside and asks it for a batch ahead (accelerate): that loader's iteration is the pass;
* :func:`framework_save` — a context in which ``torch.save`` / ``torch.load`` / safetensors
  calls are not recorded: the framework records the file it wrote with :func:`artifact`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from provtel.instrumentation.torch import hparams

logger = logging.getLogger(__name__)

__all__ = [
    "active",
    "artifact",
    "begin_evaluation",
    "end_evaluation",
    "evaluation",
    "framework_loader",
    "framework_save",
    "log",
    "params",
    "sanity_check",
]


def _tracker() -> Any:
    from provtel.instrumentation.torch import TorchInstrumentor

    instrumentor = TorchInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        return None
    tracker = instrumentor.tracker
    return tracker if tracker is not None and tracker.active() else None


def active() -> bool:
    """True when the PyTorch instrumentation records in this process (torch imported)."""
    return _tracker() is not None


def log(name: str, value: Any, step: int | None = None, context: str | None = None) -> bool:
    """Record one value (see the module documentation); False when it was not recorded."""
    tracker = _tracker()
    if tracker is None:
        return False
    try:
        return bool(tracker.log(name, value, step, context))
    except Exception:
        logger.exception("provtel: could not record the value %r", name)
        return False


def params(mapping: Any, source: str | None = None, prefix: str = "") -> bool:
    """Record configuration as hyperparameters of the run (``ml.hparam.<prefix><key>``), on
    short ``ml.log`` spans of its own under the run (any number of keys).

    ``source`` names where it came from (``"TrainingArguments"``); it is not part of the names.
    Before torch is imported the values wait for the run.
    """
    from provtel.instrumentation.torch import TorchInstrumentor

    instrumentor = TorchInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        return False
    values = (
        hparams.flatten_config(mapping, hparams.PREFIX + prefix)
        if hparams.config_mapping(mapping) is not None
        else {}
    )
    if not values:
        return False
    try:
        tracker = instrumentor.tracker
        if tracker is not None and tracker.active():
            tracker.log_params(values)  # on spans of their own: the run span's limit
        else:
            instrumentor._set_run(values)  # before torch is imported: with the run
    except Exception:
        logger.exception("provtel: could not record the configuration from %s", source)
        return False
    return True


def artifact(path: Any, kind: str = "model", operation: str = "save", fmt: str = "file") -> bool:
    """Record a file or folder the training saved (``operation="save"``, after it was written)
    or loaded; ``kind`` is ``model`` (derivation chain), ``dataset`` or ``artifact``."""
    tracker = _tracker()
    if tracker is None:
        return False
    from provtel.instrumentation.torch import checkpoint

    try:
        return checkpoint.artifact(tracker, path, kind, operation, fmt)
    except Exception:
        logger.exception("provtel: could not record the artifact %r", path)
        return False


def begin_evaluation(context: str | None = None, dataset: Any = None) -> None:
    """A framework begins an evaluation (see the module documentation)."""
    tracker = _tracker()
    if tracker is not None:
        tracker.begin_evaluation(context, dataset)


def end_evaluation() -> None:
    """The framework's evaluation is over."""
    tracker = _tracker()
    if tracker is not None:
        tracker.end_evaluation()


@contextmanager
def evaluation(context: str | None = None, dataset: Any = None) -> Iterator[None]:
    """:func:`begin_evaluation` … :func:`end_evaluation` around a block."""
    begin_evaluation(context, dataset)
    try:
        yield
    finally:
        end_evaluation()


def sanity_check(on: bool) -> None:
    """A framework's sanity check begins (True) or ends (False): nothing inside is recorded."""
    tracker = _tracker()
    if tracker is not None:
        tracker.sanity_check(on)


@contextmanager
def framework_save() -> Iterator[None]:
    """Inside: file saves and loads of torch / safetensors are not recorded (a framework that
    writes a checkpoint through a buffer and records the file with :func:`artifact`)."""
    from provtel.instrumentation.torch import checkpoint

    with checkpoint.framework_save():
        yield


def framework_loader(iterator: Any, loader: Any) -> Any:
    """``iterator`` (of ``loader``, a framework's loader driving a torch DataLoader inside)
    as the pass: its batches timed as the framework hands them out, the DataLoader inside not a
    pass of its own. Returns ``iterator`` unchanged when nothing is recorded."""
    tracker = _tracker()
    if tracker is None:
        return iterator
    from provtel.instrumentation.torch import loader as loaders

    try:
        return loaders.framework_iterator(tracker, iterator, loader)
    except Exception:
        logger.exception("provtel: could not follow the loader %r", type(loader).__name__)
        return iterator
