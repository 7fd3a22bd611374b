"""Files the training writes and reads as spans: ``torch.save`` / ``torch.load``,
``safetensors.torch`` (``save_file``, ``load_file``, ``save_model``, ``load_model``) and
``provtel.log_artifact``. The file's size and digest are computed off the training thread and
the span ends (with its original end time) once they are known. A dict given to ``torch.save``
adds its scalar and configuration entries (``ml.checkpoint.entry.*``: ``iter_num``,
``best_val_loss``, ``config.*``; secrets redacted).

What a ``torch.save`` wrote decides its kind: weights (a module, a tensor, a state dict, a
checkpoint dict holding one) are a ``model`` in the checkpoints' derivation chain; anything else
(an optimizer's or LR scheduler's state, RNG states, a settings object such as HF's
``TrainingArguments``) is an ``artifact`` beside it. A ``torch.load`` is classified by what it
returned. Saves made inside :func:`framework_save` (a framework writing a file it reports itself,
e.g. Lightning's checkpoint IO saving into a buffer) are not recorded."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from provtel.instrumentation import clock
from provtel.instrumentation.torch import hparams
from provtel.instrumentation.torch._guard import Guard
from provtel.instrumentation.torch.tracker import Tracker
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import spans

_CHUNK = 1 << 20
#: True inside framework_save(): the framework records the file itself
_FRAMEWORK_SAVE: ContextVar[bool] = ContextVar("provtel_framework_save", default=False)
#: the keys of an optimizer's state_dict()
_OPTIMIZER_STATE = frozenset({"state", "param_groups"})


@contextmanager
def framework_save() -> Iterator[None]:
    """Saves and loads inside this block are not recorded (the caller records the file)."""
    token = _FRAMEWORK_SAVE.set(True)
    try:
        yield
    finally:
        _FRAMEWORK_SAVE.reset(token)


def payload_kind(torch: Any, obj: Any) -> str:
    """``model`` when ``obj`` holds weights, else ``artifact`` (see the module documentation)."""
    return "model" if _has_weights(torch, obj, 4) else "artifact"


def _has_weights(torch: Any, obj: Any, depth: int) -> bool:
    if isinstance(obj, torch.nn.Module):
        return True
    if isinstance(obj, torch.Tensor):
        # weights are floating-point arrays (RNG states are uint8, counters are scalars)
        return bool(obj.is_floating_point() and obj.dim() > 0)
    if depth <= 0:
        return False
    if isinstance(obj, Mapping):
        if obj.keys() >= _OPTIMIZER_STATE:
            return False  # optimizer state: moments of the weights, not weights
        values: Any = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    else:
        return False
    for n, value in enumerate(values):
        if n >= 64:  # a state dict has a tensor among its first entries
            return False
        if _has_weights(torch, value, depth - 1):
            return True
    return False


def sha256_file(path: str) -> str:
    """``sha256:<hex>`` of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def sha256_folder(path: str) -> tuple[int, str]:
    """Total size and ``sha256:<hex>`` of a folder: the digest of its files' relative paths
    and digests, in sorted order (a ``save_pretrained`` folder)."""
    digest = hashlib.sha256()
    size = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            size += os.path.getsize(full)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            digest.update(f"{rel}\0{sha256_file(full)}\n".encode())
    return size, "sha256:" + digest.hexdigest()


def _finish(span: Span, path: str | None, end: int, digest: bool) -> None:
    try:
        if path is not None and os.path.isdir(path):
            size, folder_digest = sha256_folder(path)
            span.set_attribute(sc.FILE_SIZE, size)
            if digest:
                span.set_attribute(sc.ML_CHECKPOINT_DIGEST, folder_digest)
        elif path is not None:
            span.set_attribute(sc.FILE_SIZE, os.path.getsize(path))
            if digest:
                span.set_attribute(sc.ML_CHECKPOINT_DIGEST, sha256_file(path))
    except OSError:
        pass  # the file was moved or removed meanwhile: size/digest stay unknown
    finally:
        span.end(end_time=end)


def start_file_span(
    tracker: Tracker,
    name: str,
    operation: str,
    path: str | None,
    kind: str,
    fmt: str,
    extra: dict[str, Any] | None = None,
    start: int | None = None,
) -> Span | None:
    """The span of a file saved or loaded, child of the open pass (else the run)."""
    run = tracker.ensure_run()
    if run is None:
        return None
    p = tracker.current_pass() or tracker.model_pass
    # A pass whose loader is exhausted has ended as far as a file written after it is
    # concerned; so has an evaluation from the model's state (a file is written after its
    # batches, e.g. the best model once validated: the pass ends at its last batch).
    inside = (
        p is not None and not p.ended and not p.exhausted and (p.training or p.source != "model")
    )
    ctx = trace.set_span_in_context(p.span) if p is not None and inside else run
    attributes: dict[str, Any] = {
        sc.ML_ACTIVITY: act.CHECKPOINT,
        sc.ML_CHECKPOINT_OPERATION: operation,
        sc.ML_CHECKPOINT_IN_MEMORY: path is None,
        sc.ML_ARTIFACT_KIND: kind,
        sc.ML_ARTIFACT_FORMAT: fmt,
    }
    if path is not None:
        attributes[sc.FILE_PATH] = path
    if extra:
        attributes.update(extra)
    if start is None:
        start = clock.unix_ns()
    return tracker.tracer.start_span(name, context=ctx, attributes=attributes, start_time=start)


def end_file_span(tracker: Tracker, span: Span, path: str | None, end: int) -> None:
    """End ``span`` at ``end`` once the file's size and digest are known (off this thread)."""
    if path is None:
        span.end(end_time=end)
        return
    tracker.pending_digests[:] = [f for f in tracker.pending_digests if not f.done()]
    try:
        tracker.pending_digests.append(
            tracker.digests.submit(_finish, span, path, end, tracker.config.checkpoint_digest)
        )
    except RuntimeError:  # the worker has shut down (exit): finish here
        _finish(span, path, end, tracker.config.checkpoint_digest)


def _path_of(f: Any) -> str | None:
    return os.path.abspath(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else None


def _open_file_path(f: Any) -> str | None:
    """The path of a file object opened on a named file (``with open(p, "wb") as f``)."""
    name = getattr(f, "name", None)
    if isinstance(name, str) and callable(getattr(f, "flush", None)) and os.path.isfile(name):
        return os.path.abspath(name)
    return None


def wrap(
    tracker: Tracker, operation: str, file_arg: int, fmt: str = "torch", file_kw: str = "f"
) -> Any:
    """A wrapt wrapper for a function writing or reading a model file: ``torch.save`` (file is
    argument 1), ``torch.load`` (argument 0), the ``safetensors.torch`` functions."""
    guard = Guard(f"{fmt} {operation}")
    name = spans.CHECKPOINT_SAVE if operation == "save" else spans.CHECKPOINT_LOAD

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not (guard.ok and tracker.active()) or _FRAMEWORK_SAVE.get():
            return wrapped(*args, **kwargs)
        span = None
        f = None
        opened = None
        try:
            f = args[file_arg] if len(args) > file_arg else kwargs.get(file_kw)
            path = _path_of(f)
            opened = _open_file_path(f) if path is None else None
            if opened is not None:
                path = opened  # its size and digest once torch has written through it
            position = f.tell() if path is None and hasattr(f, "tell") else None
            extra = None
            kind = "model"
            if operation == "save" and fmt == "torch":
                obj = args[0] if args else kwargs.get("obj")
                extra = hparams.checkpoint_entries(obj)
                kind = payload_kind(tracker.torch, obj)
            span = start_file_span(tracker, name, operation, path, kind, fmt, extra)
        except Exception:
            guard.fail()
        if span is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            failed = clock.unix_ns()
            span.record_exception(exc, timestamp=failed)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end(end_time=failed)
            raise
        end = clock.unix_ns()
        try:
            if operation == "load" and fmt == "torch":
                span.set_attribute(sc.ML_ARTIFACT_KIND, payload_kind(tracker.torch, result))
            if opened is not None and operation == "save" and f is not None:
                f.flush()  # what torch wrote reaches the file before it is hashed
            if path is None and position is not None and f is not None:
                span.set_attribute(sc.FILE_SIZE, abs(f.tell() - position))
            end_file_span(tracker, span, path, end)
        except Exception:
            guard.fail()
            span.end(end_time=end)
        return result

    return wrapper


def artifact(tracker: Tracker, path: Any, kind: str, operation: str, fmt: str = "file") -> bool:
    """A file the script (or a framework) names as saved or loaded: a span ending now."""
    target = _path_of(path)
    if target is None or not tracker.active():
        return False
    name = spans.ARTIFACT_SAVE if operation == "save" else spans.ARTIFACT_LOAD
    now = clock.unix_ns()
    span = start_file_span(tracker, name, operation, target, kind, fmt, start=now)
    if span is None:
        return False
    end_file_span(tracker, span, target, now)
    return True
