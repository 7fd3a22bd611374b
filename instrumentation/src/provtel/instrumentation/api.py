"""The manual API: what no hook can know, in four calls and a context manager.

::

    import provtel

    provtel.log_params(config)                       # a dict, dataclass, Namespace, OmegaConf
    provtel.log_params(lr=3e-4, warmup=100)
    for step, batch in enumerate(batches):
        ...
        provtel.log_metric("grad_norm", norm, step=step)
    with provtel.context("validation"):
        provtel.log_metrics({"accuracy": acc, "f1": f1})
    provtel.log_artifact("out/tokenizer.json", kind="artifact")

With the PyTorch instrumentation active (``opentelemetry-instrument python train.py``), values
join the open step block, pass or run and become one ``provml:Metric`` per (name, context) with
its series file; parameters become hyperparameters of the run; artifacts are entities generated
by their save (``kind="model"``: in the checkpoints' derivation chain), with size and digest
computed off the training thread. ``provtel.context(name)`` makes logs inside default to that
context, and an evaluation pass begun inside it (``validation`` or ``test``) takes it.

With an OpenTelemetry SDK but no PyTorch instrumentation the calls still record, through plain
OpenTelemetry API spans (``ml.log``, ``ml.artifact.save``) in the current context. With no SDK
configured, and in DataLoader worker processes, every call is a no-op. Nothing here raises
into the training script: a value that is not a number is skipped (debug log).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

from provtel.instrumentation import clock
from provtel.instrumentation._context import USER_CONTEXT
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import spans

logger = logging.getLogger(__name__)

__all__ = ["context", "log_artifact", "log_metric", "log_metrics", "log_params"]

_KINDS = ("model", "dataset", "artifact")


def _in_worker() -> bool:
    """Inside a DataLoader worker process (which records nothing)."""
    data = sys.modules.get("torch.utils.data")
    info = getattr(data, "get_worker_info", None) if data is not None else None
    try:
        return info is not None and info() is not None
    except Exception:
        return False


def _events() -> Any:
    """The PyTorch instrumentation's event interface when it records in this process."""
    if "provtel.instrumentation.torch" not in sys.modules:
        return None
    from provtel.instrumentation.torch import events

    return events if events.active() else None


def _instrumented_torch() -> bool:
    """The PyTorch instrumentation is on (torch may not be imported yet)."""
    module = sys.modules.get("provtel.instrumentation.torch")
    if module is None:
        return False
    return bool(module.TorchInstrumentor().is_instrumented_by_opentelemetry)


def _tracer() -> Any:
    """A tracer when an SDK is configured, else None (then the API is a no-op)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    return trace.get_tracer("provtel.instrumentation.api")


def _number(value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None


def log_metric(name: str, value: Any, step: int | None = None, context: str | None = None) -> None:
    """Record one value of metric ``name`` (a number or a one-element tensor) at ``step``, in
    ``context`` (default: the enclosing :func:`context`, else the activity's)."""
    log_metrics({name: value}, step=step, context=context)


def log_metrics(
    values: Mapping[str, Any], step: int | None = None, context: str | None = None
) -> None:
    """Record several values at once (same ``step`` and ``context``)."""
    if _in_worker():
        return
    events = _events()
    if events is not None:
        for name, value in values.items():
            if not events.log(name, value, step, context):
                logger.debug("provtel: %r=%r not recorded (not a number?)", name, value)
        return
    if _instrumented_torch():
        return  # torch not imported yet, or the run is over: nothing to attach to
    tracer = _tracer()
    if tracer is None:
        return
    now = clock.unix_ns()
    rows = [(str(k), _number(v)) for k, v in values.items()]
    rows = [(k, v) for k, v in rows if v is not None]
    if not rows:
        return
    chosen = context or USER_CONTEXT.get() or act.TRAINING
    span = tracer.start_span(
        spans.LOG,
        start_time=now,
        attributes={
            sc.ML_LOG_NAME: [k for k, _ in rows],
            sc.ML_LOG_VALUE: [v for _, v in rows],
            sc.ML_LOG_STEP: [-1 if step is None else int(step)] * len(rows),
            sc.ML_LOG_CONTEXT: [chosen] * len(rows),
            sc.ML_LOG_TIME: [now] * len(rows),
        },
    )
    span.end(end_time=now)


def log_params(mapping: Any = None, **params: Any) -> None:
    """Record configuration as hyperparameters of the run: a mapping, dataclass,
    ``argparse.Namespace``, OmegaConf config or object with ``to_dict()``, and/or keyword
    arguments. Nested values become dotted names; secret-looking names are redacted."""
    if _in_worker():
        return
    from provtel.instrumentation.torch import hparams

    values: dict[str, Any] = {}
    if mapping is not None:
        values.update(hparams.flatten_config(mapping, hparams.PREFIX))
    if params:
        values.update(hparams.flatten_config(params, hparams.PREFIX))
    if not values:
        return
    if _instrumented_torch():
        from provtel.instrumentation.torch import TorchInstrumentor

        tracker = TorchInstrumentor().tracker
        if tracker is not None and tracker.active():
            tracker.log_params(values)  # the run's, on spans of their own (attribute limit)
        else:
            TorchInstrumentor()._set_run(values)  # torch not imported yet: with the run
        return
    tracer = _tracer()
    if tracer is not None:
        tracer.start_span(spans.LOG, attributes=values).end()


def log_artifact(
    path: str | os.PathLike[str], kind: str = "artifact", operation: str = "save"
) -> None:
    """Record a file or folder the script saved (after writing it) or loaded: ``kind`` is
    ``model`` (joins the checkpoints' derivation chain), ``dataset`` or ``artifact``."""
    if _in_worker():
        return
    if kind not in _KINDS:
        logger.warning(
            "provtel: log_artifact kind %r is not one of %s; using 'artifact'", kind, _KINDS
        )
        kind = "artifact"
    operation = "load" if operation == "load" else "save"
    events = _events()
    if events is not None:
        events.artifact(path, kind, operation)
        return
    if _instrumented_torch():
        return
    tracer = _tracer()
    if tracer is None:
        return
    target = os.path.abspath(os.fspath(path))
    now = clock.unix_ns()
    span = tracer.start_span(
        spans.ARTIFACT_SAVE if operation == "save" else spans.ARTIFACT_LOAD,
        start_time=now,
        attributes={
            sc.ML_ACTIVITY: act.CHECKPOINT,
            sc.ML_CHECKPOINT_OPERATION: operation,
            sc.ML_CHECKPOINT_IN_MEMORY: False,
            sc.ML_ARTIFACT_KIND: kind,
            sc.ML_ARTIFACT_FORMAT: "file",
            sc.FILE_PATH: target,
        },
    )
    threading.Thread(
        target=_finish_file, args=(span, target, now), name="provtel-artifact", daemon=True
    ).start()


def _finish_file(span: Any, path: str, end: int) -> None:
    try:
        if os.path.isfile(path):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            span.set_attribute(sc.FILE_SIZE, os.path.getsize(path))
            span.set_attribute(sc.ML_CHECKPOINT_DIGEST, "sha256:" + digest.hexdigest())
    except OSError:
        pass
    finally:
        span.end(end_time=end)


@contextmanager
def context(name: str) -> Iterator[None]:
    """Values logged inside default to context ``name`` (``validation``, ``test`` or your
    own); an evaluation pass begun inside a ``validation``/``test`` context takes it."""
    token = USER_CONTEXT.set(str(name))
    try:
        yield
    finally:
        USER_CONTEXT.reset(token)
