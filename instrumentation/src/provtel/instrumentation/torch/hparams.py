"""Hyperparameters and inputs found without code changes, as OpenTelemetry attribute values."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from provtel.semconv import attributes as sc
from provtel.semconv import redaction
from provtel.semconv.redaction import redact_value

PREFIX = "ml.hparam."
_SCALARS = (bool, int, float, str)
_SCHEDULER_SKIP = {"base_lrs", "last_epoch", "verbose", "optimizer"}
_ROOT_ATTRS = ("root", "root_dir", "data_dir", "path", "data_path", "dataset_path")


def attribute_value(value: Any) -> Any:
    """A value OpenTelemetry accepts: a scalar, a homogeneous list of scalars, or its string."""
    if isinstance(value, _SCALARS):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "numel", lambda: 2)() == 1:
        try:
            return item()  # a 0-d tensor (learning rate as a tensor)
        except Exception:
            return str(value)
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds.pop() in _SCALARS:
            return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def optimizer_hparams(optimizer: Any, index: int) -> dict[str, Any]:
    """The optimizer's class and its first param group's settings (``ml.hparam.optimizer.*``).

    ``index`` numbers optimizers in construction order; the first is ``optimizer``, the next
    ``optimizer_2`` and so on (a GAN has two).
    """
    name = "optimizer" if index == 1 else f"optimizer_{index}"
    out: dict[str, Any] = {PREFIX + name: type(optimizer).__name__}
    groups = getattr(optimizer, "param_groups", None) or []
    if groups:
        for key, value in groups[0].items():
            if key == "params" or value is None:
                continue
            out[f"{PREFIX}{name}.{key}"] = attribute_value(value)
        if len(groups) > 1:
            out[f"{PREFIX}{name}.param_groups"] = len(groups)
    return out


def scheduler_hparams(scheduler: Any) -> dict[str, Any]:
    """The LR scheduler's class and its scalar settings (``ml.hparam.lr_scheduler.*``)."""
    out: dict[str, Any] = {PREFIX + "lr_scheduler": type(scheduler).__name__}
    for key, value in vars(scheduler).items():
        if key.startswith("_") or key in _SCHEDULER_SKIP:
            continue
        if isinstance(value, _SCALARS) or (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, (int, float)) for v in value)
        ):
            out[f"{PREFIX}lr_scheduler.{key}"] = attribute_value(value)
    return out


def namespace_hparams(namespace: Any) -> dict[str, Any]:
    """Parsed argparse arguments (``ml.hparam.<dest>``); secret-looking ones ``[redacted]``."""
    try:
        items = vars(namespace).items()
    except TypeError:
        return {}
    return {
        PREFIX + str(k): redact_value(str(k), attribute_value(v)) for k, v in items if v is not None
    }


def module_of_generator(params: Any) -> Any:
    """The module of an unstarted ``model.parameters()`` generator (the usual way an optimizer
    is given its parameters), else None. Nothing is consumed."""
    candidates = [params]
    if isinstance(params, (list, tuple)):
        candidates = [g.get("params") for g in params if isinstance(g, dict)]
    for candidate in candidates:
        code = getattr(candidate, "gi_code", None)
        frame = getattr(candidate, "gi_frame", None)
        if frame is not None and getattr(code, "co_name", "") in _PARAMETER_METHODS:
            module = frame.f_locals.get("self")
            if module is not None:
                return module
    return None


def module_in_frames(optimizer: Any, frame: Any, torch: Any, depth: int = 4) -> Any:
    """The largest module in the locals of the calling frames that owns the optimizer's first
    parameter (parameters given as a list), else None."""
    try:
        first = optimizer.param_groups[0]["params"][0]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    best, best_size = None, -1
    seen: set[int] = set()
    while frame is not None and depth > 0:
        for value in list(frame.f_locals.values()):
            if not isinstance(value, torch.nn.Module) or id(value) in seen:
                continue
            seen.add(id(value))
            params = list(value.parameters())
            if len(params) > best_size and any(p is first for p in params):
                best, best_size = value, len(params)
        frame, depth = frame.f_back, depth - 1
    return best


_PARAMETER_METHODS = ("parameters", "named_parameters")


def model_attributes(model: Any) -> dict[str, Any]:
    """Class, parameter count, dtype and device of a model (compiled models: the original)."""
    original = getattr(model, "_orig_mod", model)
    out: dict[str, Any] = {sc.ML_MODEL_CLASS: type(original).__name__}
    count = 0
    first = None
    for p in original.parameters():
        count += p.numel()
        if first is None:
            first = p
    out[sc.ML_MODEL_PARAMETERS] = count
    if first is not None:
        out[sc.ML_MODEL_DTYPE] = str(first.dtype).removeprefix("torch.")
        out[sc.ML_MODEL_DEVICE] = str(first.device)
    return out


def _length(obj: Any) -> int | None:
    try:
        n = len(obj)
    except Exception:  # iterable datasets have no length
        return None
    return n if isinstance(n, int) else None


def loader_attributes(loader: Any) -> dict[str, Any]:
    """Dataset and DataLoader settings of a pass (``ml.dataset.*``, ``ml.dataloader.*``)."""
    out: dict[str, Any] = {}
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        inner = dataset
        while type(inner).__name__ == "Subset" and hasattr(inner, "dataset"):
            inner = inner.dataset  # name a Subset after what it subsets
        out[sc.ML_DATASET_CLASS] = type(dataset).__name__
        root = next(
            (
                getattr(inner, a)
                for a in _ROOT_ATTRS
                if isinstance(getattr(inner, a, None), (str, os.PathLike))
            ),
            None,
        )
        if root is not None:
            out[sc.ML_DATASET_PATH] = os.path.abspath(os.fspath(root))
            out[sc.ML_DATASET_NAME] = os.path.basename(os.path.normpath(os.fspath(root)))
        else:
            out[sc.ML_DATASET_NAME] = type(inner).__name__
        size = _length(dataset)
        if size is not None:
            out[sc.ML_DATASET_SIZE] = size
    batch_size = getattr(loader, "batch_size", None)
    if isinstance(batch_size, int):
        out[sc.ML_DATALOADER_BATCH_SIZE] = batch_size
    out[sc.ML_DATALOADER_NUM_WORKERS] = int(getattr(loader, "num_workers", 0) or 0)
    sampler = getattr(loader, "sampler", None)
    out[sc.ML_DATALOADER_SHUFFLE] = type(sampler).__name__ == "RandomSampler"
    out[sc.ML_DATALOADER_PERSISTENT_WORKERS] = bool(getattr(loader, "persistent_workers", False))
    return out


def flatten(prefix: str, mapping: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``prefix + key`` pairs with attribute-safe values."""
    for key, value in mapping.items():
        yield prefix + key, attribute_value(value)


def finite_or_nan(value: Any) -> float:
    """A float learning rate (tensor or number); NaN when it cannot be read."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return f


# -- configuration objects ---------------------------------------------------------------------
_MAX_DEPTH = 4
_MAX_ITEMS = 500  # a configuration larger than this is cut (one debug line), never the training


def is_secret(name: str) -> bool:
    """Whether a configuration name looks secret (``provtel.semconv.redaction``'s policy)."""
    return redaction.is_secret(name)


REDACTED = redaction.REDACTED


def config_mapping(obj: Any) -> Mapping[str, Any] | None:
    """The key/value view of a configuration object, else None: a mapping, a dataclass, an
    ``argparse.Namespace``, an OmegaConf config, an object with ``to_dict()`` (Hugging Face
    ``TrainingArguments``, ``PretrainedConfig``)."""
    if isinstance(obj, Mapping):
        return obj
    module = type(obj).__module__ or ""
    if module.startswith("omegaconf"):
        try:
            from omegaconf import OmegaConf

            container = OmegaConf.to_container(obj, resolve=True)
        except Exception:
            return None
        return container if isinstance(container, Mapping) else None
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, type):
        try:
            out = to_dict()
        except Exception:
            return None
        return out if isinstance(out, Mapping) else None
    if type(obj).__name__ == "Namespace" and hasattr(obj, "__dict__"):
        return vars(obj)
    return None


def flatten_config(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A configuration object as flat ``prefix + dotted.key`` -> attribute value pairs.

    Nested configurations become dotted keys, scalars and lists of scalars are kept, other
    values (tensors aside) are left out; names that look secret get ``[REDACTED]``.
    """
    out: dict[str, Any] = {}

    def walk(mapping: Mapping[str, Any], path: str, depth: int) -> None:
        for key, value in mapping.items():
            if len(out) >= _MAX_ITEMS:
                return
            name = f"{path}{key}"
            if is_secret(str(key)):
                out[prefix + name] = REDACTED
                continue
            if value is None:
                continue
            nested = config_mapping(value) if not isinstance(value, _SCALARS) else None
            if nested is not None:
                if depth < _MAX_DEPTH:
                    walk(nested, name + ".", depth + 1)
                continue
            if isinstance(value, str):
                out[prefix + name] = redaction.redact_text(value)  # URLs lose credentials
            elif isinstance(value, _SCALARS):
                out[prefix + name] = value
            elif isinstance(value, (list, tuple)):
                if value and all(isinstance(v, _SCALARS) for v in value):
                    out[prefix + name] = attribute_value(value)
            elif getattr(value, "numel", None) is not None:
                try:
                    if value.numel() == 1:
                        out[prefix + name] = value.item()
                except Exception:
                    continue
            elif isinstance(value, os.PathLike) or type(value).__name__ in ("dtype", "device"):
                out[prefix + name] = str(value)
            elif hasattr(value, "value") and type(value).__class__.__name__ == "EnumMeta":
                out[prefix + name] = attribute_value(value.value)

    mapping = config_mapping(obj)
    if mapping is not None:
        walk(mapping, "", 0)
    return out


def checkpoint_entries(obj: Any) -> dict[str, Any]:
    """The scalar and configuration entries of a dict given to ``torch.save``
    (``ml.checkpoint.entry.<key>``): ``iter_num``, ``best_val_loss``, ``config.*``; tensors,
    state dicts and modules are left out."""
    if not isinstance(obj, Mapping):
        return {}
    return flatten_config(
        {k: v for k, v in obj.items() if isinstance(k, str) and not _is_state(v)},
        sc.CHECKPOINT_ENTRY_PREFIX,
    )


def _is_state(value: Any) -> bool:
    """A state dict or a module: weights, not configuration."""
    if getattr(value, "numel", None) is not None:
        try:
            return bool(value.numel() != 1)  # a 0-d tensor (best_val_loss) is a scalar
        except Exception:
            return True
    if hasattr(value, "state_dict"):
        return True
    if isinstance(value, Mapping) and "param_groups" in value:
        return True  # an optimizer's state dict
    if isinstance(value, Mapping) and value:
        first = next(iter(value.values()))
        return getattr(first, "numel", None) is not None or (
            isinstance(first, Mapping)
            and any(getattr(v, "numel", None) is not None for v in first.values())
        )
    return False
