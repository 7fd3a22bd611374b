"""provtel: provenance of PyTorch training runs with OpenTelemetry.

``provtel`` is shared by three distributions (provtel-semconv, provtel-instrumentation,
provtel-exporter); ``extend_path`` lets their ``provtel.*`` subpackages resolve side by side in
editable and normal installs. The manual API is imported lazily (``import provtel`` stays
cheap)::

    import provtel

    provtel.log_metric("accuracy", acc, step=step)
    provtel.log_metrics({"f1": f1, "auc": auc}, context="validation")
    provtel.log_params(config, warmup=100)
    provtel.log_artifact("out/vocab.json")
    with provtel.context("test"):
        evaluate(model, test_data)
    with provtel.run(name="finetune"):
        train(model)
"""

from __future__ import annotations

from pkgutil import extend_path
from typing import Any

__path__ = extend_path(__path__, __name__)

_API = ("log_metric", "log_metrics", "log_params", "log_artifact", "context")

__all__ = [*_API, "run"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from provtel.instrumentation import api

        return getattr(api, name)
    if name == "run":
        import importlib

        return importlib.import_module("provtel.run")  # a callable module
    raise AttributeError(f"module 'provtel' has no attribute {name!r}")
