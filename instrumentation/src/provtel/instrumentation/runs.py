"""Named runs: ``provtel.run(name=...)`` marks where a run begins and ends.

Without it, the PyTorch instrumentation makes one run per process, from the first training
activity to exit. A notebook or a script with several training phases names them::

    import provtel.run

    with provtel.run(name="pretrain", lr=3e-4):
        train(model, pretrain_loader)
    with provtel.run(name="finetune"):
        train(model, finetune_loader)

Each block is one ``ml.run`` span (a ``provtel:Run`` activity in PROV) with its own epochs,
steps and checkpoints; keyword arguments become hyperparameters (``ml.hparam.<name>``). An
exception leaving the block is recorded on the run and propagates unchanged. It works with or
without the PyTorch instrumentation (then it is a plain run span).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from provtel.instrumentation import clock
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import spans
from provtel.semconv.redaction import redact_value


def _hyperparameters(values: dict[str, Any]) -> dict[str, Any]:
    from provtel.instrumentation.torch.hparams import PREFIX, attribute_value

    return {
        PREFIX + key: redact_value(key, attribute_value(value)) for key, value in values.items()
    }


def _torch_tracker() -> Any:
    from provtel.instrumentation.torch import TorchInstrumentor

    instrumentor = TorchInstrumentor()  # the process-wide instance
    if not instrumentor.is_instrumented_by_opentelemetry:
        return None
    tracker = instrumentor.tracker
    return tracker if tracker is not None and tracker.active() else None


@contextmanager
def run(name: str | None = None, **hyperparameters: Any) -> Iterator[Span | None]:
    """Record the enclosed code as one run named ``name`` (see the module documentation)."""
    attributes = _hyperparameters(hyperparameters)
    tracker = _torch_tracker()
    if tracker is not None:
        span = tracker.start_run(name, attributes)
        try:
            yield span
        except BaseException as exc:
            tracker.end_run(exc)
            raise
        tracker.end_run()
        return
    span = trace.get_tracer(__name__).start_span(
        spans.RUN,
        attributes={
            sc.ML_ACTIVITY: act.RUN,
            **({sc.ML_RUN_NAME: name} if name else {}),
            **attributes,
        },
        start_time=clock.unix_ns(),  # the clock of provtel's other times (clock.py)
    )
    with trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield span
        except BaseException as exc:
            failed = clock.unix_ns()
            span.record_exception(exc, timestamp=failed)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end(end_time=failed)
            raise
        span.end(end_time=clock.unix_ns())
