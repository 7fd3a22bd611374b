"""yProv4ML 3.x's API, recorded by provtel: change one import and keep the script.

::

    import provtel.compat.yprov4ml as yprov4ml      # was: import yprov4ml

    yprov4ml.start_run(experiment_name="mnist", provenance_save_dir="prov")
    yprov4ml.log_param("lr", 1e-3)
    yprov4ml.log_dataset("train_dataset", train_loader)
    for epoch in range(epochs):
        for x, y in train_loader:
            ...
            yprov4ml.log_metric("loss", loss.item(), context=yprov4ml.Context.TRAINING, step=epoch)
        yprov4ml.save_model_version("mnist_model", model, yprov4ml.Context.TRAINING, step=epoch)
    yprov4ml.end_run()

The module-level functions of ``yprov4ml`` 3.2.8 are here with the same names, arguments and
defaults (the argument order of yProv4ML's older documentation, ``save_model_version(model,
name)`` and ``log_dataset(dataset, label)``, is accepted too). They record through provtel's
manual API (:mod:`provtel.instrumentation.api`), so a run gets everything yProv4ML records —
parameters, every metric value per context, models, datasets, the source and the command — in
provtel's W3C PROV document, plus what provtel's instrumentation sees by itself: epochs, steps
and their timings, evaluation passes, hardware and energy, checkpoint lineage with digests.
``start_run`` … ``end_run`` is one run (a ``provtel.run(name=experiment_name)``), and several
pairs in one process are several runs of one document. Where behaviour differs from yProv4ML,
``docs/yprov4ml.md`` has a table, function by function.

**With or without** ``opentelemetry-instrument``. Under ``opentelemetry-instrument`` (or any
configured OpenTelemetry SDK) the calls record into it. Run as plain ``python train.py``,
:func:`start_run` sets OpenTelemetry up the way ``opentelemetry-instrument`` would (provtel's
distro and configurator, the PROV exporter, the PyTorch and hardware instrumentors). That is the
one place where this package of the instrumentation distribution reaches beyond the
OpenTelemetry API: ``opentelemetry.instrumentation.auto_instrumentation.initialize`` loads the
SDK and the exporter through their entry points, lazily, inside :func:`start_run`, and only
when no SDK ``TracerProvider`` is configured. Either way the document is written when the
process exits (also after an exception).

**Files.** Nothing is written to the working directory: the run folder goes to
``provenance_save_dir`` (when provtel sets the SDK up itself; under ``opentelemetry-instrument``
``OTEL_PYTHON_PROVTEL_OUTPUT_DIR`` decides, default ``./prov``), and model files saved by
:func:`save_model_version` / :func:`log_model` go to an artifacts folder beside the run folders,
``<output>/artifacts/<experiment>-<UTC time>-<pid>/`` (:func:`get_artifacts_dir`).
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace

from provtel.instrumentation import api as _api
from provtel.instrumentation import clock
from provtel.instrumentation import runs as _runs
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import spans
from provtel.semconv.redaction import redact_text

logger = logging.getLogger(__name__)

__all__ = [
    "CompressorType",
    "Context",
    "end_run",
    "get_artifacts_dir",
    "get_run_dir",
    "log_artifact",
    "log_context",
    "log_current_execution_time",
    "log_dataset",
    "log_execution_command",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_provenance_documents",
    "log_source_code",
    "log_system_metrics",
    "save_model_version",
    "start_run",
]

# The exporter's variables (provtel.exporter.environment_variables; not imported here).
_OUTPUT_DIR_ENV = "OTEL_PYTHON_PROVTEL_OUTPUT_DIR"
_RUN_NAME_ENV = "OTEL_PYTHON_PROVTEL_RUN_NAME"
_DEFAULT_OUTPUT_DIR = "prov"
_GIB = 1024**3


class Context(str, enum.Enum):
    """The contexts yProv4ML's documentation names, as provtel's context strings.

    ``TESTING`` is provtel's ``test`` context (that of its test passes); any other string,
    or a member of your own :class:`enum.Enum` (its lower-cased name), is a context too.
    """

    TRAINING = act.TRAINING
    VALIDATION = act.VALIDATION
    TESTING = act.TEST
    MODELS = "models"
    DATASETS = "datasets"

    def __str__(self) -> str:
        return str(self.value)


class CompressorType(enum.Enum):
    """yProv4ML's metric-file compressors; accepted by :func:`start_run` and not needed
    (provtel writes one CSV series per metric and context)."""

    NONE = None
    ZIP = "zip"
    BLOSC_ZSTD = "blosc_zstd"
    LZ4 = "l4"


class _State:
    """The open run of this process (yProv4ML keeps one too)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.run: Any = None  # the entered provtel.run context manager
        self.experiment: str | None = None
        self.output_dir: Path | None = None
        self.artifacts: Path | None = None
        self.at_exit = False
        self.setup = ""  # how OpenTelemetry was found: "configured", "provtel", "none"


_state = _State()
_log_metrics = _api.log_metrics  # bound once: the per-call path is one dict and one call


def _context(context: Any) -> str | None:
    """A yProv4ML context (None, a string, :class:`Context` or any enum) as a string."""
    if context is None or type(context) is str:
        return context
    if isinstance(context, Context):
        return str(context.value)
    if isinstance(context, enum.Enum):
        return str(context.name).lower()
    return str(context)


# -- the run ------------------------------------------------------------------------------------


def start_run(
    experiment_name: str,
    prov_user_namespace: str | None = None,
    provenance_save_dir: str | None = None,
    collect_all_processes: bool | None = False,
    save_after_n_logs: int | None = 100,
    rank: int | None = None,
    metrics_file_type: str = "csv",
    csv_separator: str = ",",
    use_compressor: CompressorType | bool | None = None,
    use_run_id: int | None = None,
) -> None:
    """Begin the run ``experiment_name`` (setting OpenTelemetry up first when nothing has).

    ``provenance_save_dir`` is where run folders go when provtel sets the SDK up itself. The
    storage options (``save_after_n_logs``, ``metrics_file_type``, ``csv_separator``,
    ``use_compressor``, ``use_run_id``), ``prov_user_namespace``, ``collect_all_processes``
    and ``rank`` are accepted and not needed: every value is streamed to one CSV series per
    metric and context, and every rank of a job is recorded (see ``docs/yprov4ml.md``).
    """
    with _state.lock:
        if _state.run is not None:
            logger.warning(
                "provtel: start_run(%r) while run %r is open: ending that one first",
                experiment_name,
                _state.experiment,
            )
            _finish(None)
        _state.setup = _ensure_sdk(str(experiment_name), provenance_save_dir)
        _state.experiment = str(experiment_name)
        _state.output_dir = Path(os.environ.get(_OUTPUT_DIR_ENV) or _DEFAULT_OUTPUT_DIR).absolute()
        _state.artifacts = None
        if metrics_file_type not in ("csv", None):
            logger.info(
                "provtel: metrics_file_type=%r: provtel writes CSV series (float64, lossless)",
                metrics_file_type,
            )
        run = _runs.run(_state.experiment)
        run.__enter__()
        _state.run = run
        if not _state.at_exit:
            _state.at_exit = True
            atexit.register(_at_exit)


def end_run(
    create_graph: bool | None = False,
    create_svg: bool | None = False,
    crate_ro_crate: bool | None = False,
    create_card: bool | None = False,
) -> None:
    """End the run begun by :func:`start_run`; its document is written when the process exits.

    The graph, SVG, RO-Crate and card options are accepted; provtel writes its document (and
    the serialisations in ``OTEL_PYTHON_PROVTEL_FORMATS``) and prints its end-of-run summary.
    """
    if create_graph or create_svg or crate_ro_crate or create_card:
        logger.info(
            "provtel: end_run(create_graph/create_svg/crate_ro_crate/create_card) is not "
            "needed: the PROV document and its series are written at exit"
        )
    with _state.lock:
        _finish(None)


def log_provenance_documents(
    create_graph: bool | None = False,
    create_svg: bool | None = False,
    crate_ro_crate: bool | None = False,
) -> None:
    """yProv4ML's itwinai name for :func:`end_run`."""
    end_run(create_graph, create_svg, crate_ro_crate)


def _finish(exc: BaseException | None) -> None:
    run, _state.run = _state.run, None
    if run is None:
        return
    try:
        if exc is None:
            run.__exit__(None, None, None)
        else:
            run.__exit__(type(exc), exc, exc.__traceback__)
    except BaseException as raised:  # the exception handed in comes back out: expected
        if raised is not exc:
            logger.warning("provtel: could not end the run cleanly: %s", raised)


def _at_exit() -> None:
    # Runs before the SDK's own exit handler (registered earlier), so the run ends first;
    # after an uncaught exception, the interpreter has put it in sys.last_value.
    with _state.lock:
        if _state.run is not None:
            _finish(getattr(sys, "last_value", None))


def _launched_by_opentelemetry_instrument() -> bool:
    site = sys.modules.get("sitecustomize")
    return "auto_instrumentation" in str(getattr(site, "__file__", ""))


def _ensure_sdk(experiment_name: str, save_dir: str | None) -> str:
    """Make sure spans are recorded somewhere; return how OpenTelemetry was found."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        if save_dir:
            logger.debug(
                "provtel: OpenTelemetry is already configured: provenance_save_dir=%r is not "
                "used (OTEL_PYTHON_PROVTEL_OUTPUT_DIR decides)",
                save_dir,
            )
        return "configured"
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    if _launched_by_opentelemetry_instrument():
        return "none"  # opentelemetry-instrument ran and configured no SDK: respect that
    # The one exception to "OpenTelemetry API only": set the SDK, provtel's PROV exporter and
    # the instrumentors up as opentelemetry-instrument does, through their entry points.
    if save_dir:
        os.environ[_OUTPUT_DIR_ENV] = os.path.abspath(save_dir)
    os.environ.setdefault(_RUN_NAME_ENV, experiment_name)
    os.environ.setdefault("OTEL_PYTHON_DISTRO", "provtel")
    os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "provtel")
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize()
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        logger.warning("provtel: OpenTelemetry could not be set up; this run is not recorded")
        return "none"
    return "provtel"


def get_artifacts_dir() -> str:
    """The folder this run saves model files in (created on first use)."""
    with _state.lock:
        if _state.artifacts is None:
            root = (_state.output_dir or Path(_DEFAULT_OUTPUT_DIR).absolute()) / "artifacts"
            _state.artifacts = _unique_dir(root, _state.experiment or "run")
        return str(_state.artifacts)


def get_run_dir() -> str:
    """yProv4ML's run folder: here the artifacts folder (the document is written at exit)."""
    return get_artifacts_dir()


def _unique_dir(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{_safe(name)}-{stamp}-{os.getpid()}"
    for n in range(1, 10_000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free artifacts folder name under {root}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "_"


# -- values ------------------------------------------------------------------------------------


def log_metric(
    key: str,
    value: float,
    context: Any = None,
    step: int = 0,
    source: str | None = None,
    timestamp: int | None = None,
) -> None:
    """One value of metric ``key`` at ``step`` in ``context`` (a string or :class:`Context`).

    Every value is kept (one CSV row per call). ``source`` and ``timestamp`` are accepted; the
    time is when the call is made.
    """
    _log_metrics(
        {key: value},
        step,
        context if context is None or type(context) is str else _context(context),
    )


def log_metrics(
    metrics: dict[str, float],
    context: Any = None,
    step: int = 0,
    source: str | None = None,
) -> None:
    """Several values at the same ``step`` and ``context`` (not in yProv4ML 3.2.8)."""
    _log_metrics(metrics, step, _context(context))


def log_current_execution_time(label: str, context: Any = None, step: int | None = None) -> None:
    """The current time (seconds since the Unix epoch) as metric ``label``."""
    _log_metrics({label: time.time()}, step, _context(context))


def log_param(
    key: str, value: Any, context: Any = None, source: str | None = None, is_input: bool = False
) -> None:
    """A parameter of the run (a hyperparameter entity used by the run; secrets redacted)."""
    _api.log_params({str(key): value})


def log_execution_command(cmd: str, path: str) -> None:
    """The command that runs the experiment, as the parameter ``execution_command``.

    provtel records the process's real command line by itself; credentials are redacted.
    """
    _api.log_params({"execution_command": redact_text(f"{cmd} {path}".strip())})


def log_context(
    context: Any, is_subcontext_of: Any = None, source_of_data: str | None = None
) -> None:
    """Accepted: contexts are plain strings in provtel and need no declaration."""
    logger.debug(
        "provtel: log_context(%r, is_subcontext_of=%r) needs no declaration",
        context,
        is_subcontext_of,
    )


def log_system_metrics(context: Any = None, step: int = 0) -> None:
    """System readings as metrics at ``step``: CPU %, RAM % and GiB, disk % and GiB of ``/``.

    provtel's hardware instrumentation also samples CPU, memory, GPUs and energy by itself;
    readings that are not available are left out, never logged as zero or "None".
    """
    try:
        import psutil
    except ImportError:
        return
    values: dict[str, float] = {}
    try:
        values["cpu_usage_pct"] = float(psutil.cpu_percent(interval=None))
        memory = psutil.virtual_memory()
        values["ram_usage_pct"] = float(memory.percent)
        values["ram_usage_gb"] = memory.used / _GIB
        disk = psutil.disk_usage("/")
        values["disk_usage_pct"] = float(disk.percent)
        values["disk_usage_gb"] = disk.used / _GIB
    except (OSError, RuntimeError, AttributeError) as exc:
        logger.debug("provtel: system reading failed: %s", exc)
    if values:
        _log_metrics(values, step, _context(context))


# -- files -------------------------------------------------------------------------------------


def _torch_records_saves() -> bool:
    """True when the PyTorch instrumentation records ``torch.save`` itself."""
    if "provtel.instrumentation.torch" not in sys.modules:
        return False
    from provtel.instrumentation.torch import events

    return events.active()


def _name_first(name: Any, obj: Any) -> tuple[str, Any]:
    """``(name, object)`` whichever order they came in (older docs put the object first)."""
    if not isinstance(name, str) and isinstance(obj, str):
        return obj, name
    return str(name), obj


def _save_model(model: Any, path: Path) -> None:
    import torch

    state = model.state_dict() if hasattr(model, "state_dict") else model
    torch.save(state, path)
    if not _torch_records_saves():
        _api.log_artifact(path, kind="model", operation="save")


def save_model_version(
    model_name: str,
    model: Any,
    context: Any = None,
    source: str | None = None,
    step: int | None = None,
    incremental: bool = True,
    is_input: bool = False,
    log_copy_in_prov_directory: bool = True,
    other_attrs: dict[str, Any] | None = None,
) -> None:
    """Save the model's ``state_dict`` as the next version ``<name>_<n>.pt`` in the artifacts
    folder; it becomes a ``provml:Model`` with size and SHA-256, derived from the previous one.

    Returns None (yProv4ML returns its ``prov`` entity).
    """
    model_name, model = _name_first(model_name, model)
    name = _safe(model_name)
    folder = Path(get_artifacts_dir()) / name
    folder.mkdir(parents=True, exist_ok=True)
    if incremental:  # numbered as yProv4ML does: the files of this name already there
        n = sum(1 for f in folder.iterdir() if re.fullmatch(rf"{re.escape(name)}_\d+\.pt", f.name))
        path = folder / f"{name}_{n}.pt"
    else:
        path = folder / f"{name}.pt"
    _save_model(model, path)


def log_model(
    model_name: str,
    model: Any,
    context: Any = None,
    source: str | None = None,
    log_model_info: bool = True,
    log_model_layers: bool = False,
    log_copy_in_prov_directory: bool = True,
    is_input: bool = False,
    other_attrs: dict[str, Any] | None = None,
) -> None:
    """Save the final model as ``<name>.pt`` (and, with ``log_model_layers``, a JSON
    description of its layers); class, parameter count, dtype and device are recorded by the
    PyTorch instrumentation."""
    model_name, model = _name_first(model_name, model)
    save_model_version(model_name, model, context, source, incremental=False)
    if log_model_layers:
        path = Path(get_artifacts_dir()) / _safe(model_name) / f"{_safe(model_name)}_layers.json"
        path.write_text(json.dumps(_layers(model), indent=1), "utf-8")
        _api.log_artifact(path, kind="artifact", operation="save")


def _layers(module: Any) -> dict[str, Any]:
    children = dict(module.named_children()) if hasattr(module, "named_children") else {}
    if children:
        return {name: _layers(child) for name, child in children.items()}
    out: dict[str, Any] = {"layer_type": type(module).__name__}
    for attr in (
        "in_features",
        "out_features",
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
    ):
        if hasattr(module, attr):
            out[attr] = str(getattr(module, attr))
    weight = getattr(module, "weight", None)
    if weight is not None and hasattr(weight, "dtype"):
        out["dtype"] = str(weight.dtype)
    return out


def log_artifact(
    artifact_name: str,
    artifact_path: str,
    context: Any = None,
    source: str | None = None,
    step: int = 0,
    log_copy_in_prov_directory: bool = True,
    log_copy_subdirectory: str | None = None,
    is_model: bool = False,
    is_input: bool = False,
    other_attrs: dict[str, Any] | None = None,
) -> None:
    """A file or folder the run wrote (``is_input``: read), with its size and SHA-256.

    It is recorded where it is, not copied (the digest identifies it).
    """
    _api.log_artifact(
        artifact_path,
        kind="model" if is_model else "artifact",
        operation="load" if is_input else "save",
    )


def log_source_code(use_git: bool = False) -> None:
    """The script the run executes, as an input with its SHA-256.

    provtel also records the script path, the git commit and whether the tree is dirty by
    itself (``use_git`` is accepted, not needed).
    """
    script = sys.argv[0] if sys.argv else ""
    if script and os.path.isfile(script):
        _api.log_artifact(os.path.abspath(script), kind="artifact", operation="load")


def log_dataset(
    dataset_label: str,
    dataset: Any,
    context: Any = None,
    source: str | None = None,
    log_dataset_info: bool = True,
    other_attrs: dict[str, Any] | None = None,
) -> None:
    """A dataset (a ``DataLoader``, ``Subset`` or ``Dataset``) named ``dataset_label``: a
    ``provml:Dataset`` with its size and, for a loader, batch size, workers and shuffling."""
    dataset_label, dataset = _name_first(dataset_label, dataset)
    tracer = _api._tracer()
    if tracer is None or _api._in_worker():
        return
    attributes: dict[str, Any] = {sc.ML_DATASET_NAME: dataset_label}
    if log_dataset_info:
        attributes.update(_dataset_attributes(dataset))
    label = _context(context)
    if label:
        attributes[sc.ML_CONTEXT] = label
    now = clock.unix_ns()
    tracer.start_span(spans.LOG, attributes=attributes, start_time=now).end(end_time=now)


def _dataset_attributes(dataset: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    data = getattr(dataset, "dataset", None) if hasattr(dataset, "batch_size") else dataset
    if data is not None:
        out[sc.ML_DATASET_CLASS] = type(data).__name__
        with contextlib.suppress(TypeError):  # an iterable dataset has no length
            out[sc.ML_DATASET_SIZE] = len(data)
    if hasattr(dataset, "batch_size"):  # a DataLoader
        if isinstance(dataset.batch_size, int):
            out[sc.ML_DATALOADER_BATCH_SIZE] = dataset.batch_size
        out[sc.ML_DATALOADER_NUM_WORKERS] = int(getattr(dataset, "num_workers", 0) or 0)
        sampler = getattr(dataset, "sampler", None)
        out[sc.ML_DATALOADER_SHUFFLE] = type(sampler).__name__ == "RandomSampler"
    return out
