"""torch.save / torch.load as checkpoint spans; the file digest is computed off the training
thread and the span ends (with its original end time) once the digest is known."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from provtel.instrumentation.torch._guard import Guard
from provtel.instrumentation.torch.tracker import Tracker
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import spans

_CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    """``sha256:<hex>`` of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _finish(span: Span, path: str | None, end: int, digest: bool) -> None:
    try:
        if path is not None:
            span.set_attribute(sc.FILE_SIZE, os.path.getsize(path))
            if digest:
                span.set_attribute(sc.ML_CHECKPOINT_DIGEST, sha256_file(path))
    except OSError:
        pass  # the file was moved or removed meanwhile: size/digest stay unknown
    finally:
        span.end(end_time=end)


def wrap(tracker: Tracker, operation: str, file_arg: int) -> Any:
    """A wrapt wrapper for ``torch.save`` (file is argument 1) or ``torch.load`` (argument 0)."""
    guard = Guard(f"torch.{operation}")
    name = spans.CHECKPOINT_SAVE if operation == "save" else spans.CHECKPOINT_LOAD

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not (guard.ok and tracker.active()):
            return wrapped(*args, **kwargs)
        span = None
        try:
            f = args[file_arg] if len(args) > file_arg else kwargs.get("f")
            path = os.path.abspath(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else None
            position = f.tell() if path is None and hasattr(f, "tell") else None
            run = tracker.ensure_run()
            if run is not None:
                p = tracker.current_pass()
                ctx = trace.set_span_in_context(p.span) if p is not None else run
                attributes: dict[str, Any] = {
                    sc.ML_ACTIVITY: act.CHECKPOINT,
                    sc.ML_CHECKPOINT_OPERATION: operation,
                    sc.ML_CHECKPOINT_IN_MEMORY: path is None,
                }
                if path is not None:
                    attributes[sc.FILE_PATH] = path
                span = tracker.tracer.start_span(name, context=ctx, attributes=attributes)
        except Exception:
            guard.fail()
        if span is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        end = time.time_ns()
        try:
            if path is None:
                if position is not None:
                    span.set_attribute(sc.FILE_SIZE, abs(f.tell() - position))
                span.end(end_time=end)
            else:
                tracker.pending_digests[:] = [f for f in tracker.pending_digests if not f.done()]
                tracker.pending_digests.append(
                    tracker.digests.submit(
                        _finish, span, path, end, tracker.config.checkpoint_digest
                    )
                )
        except Exception:
            guard.fail()
            span.end(end_time=end)
        return result

    return wrapper
