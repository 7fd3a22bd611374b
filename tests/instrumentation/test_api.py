"""``import provtel`` and the manual API outside the PyTorch instrumentation: a no-op with no
SDK, plain OpenTelemetry API spans with an SDK, and ``provtel.*`` subpackages of the three
distributions still importable beside the new ``provtel/__init__.py``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import clean_env


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_sdk_every_call_is_a_no_op() -> None:
    result = _python(
        """
        import sys
        import provtel, provtel.semconv, provtel.exporter.prov.mapping  # three distributions
        import provtel.run
        provtel.log_metric("x", 1.0, step=1)
        provtel.log_metrics({"a": 1, "b": "not a number"})
        provtel.log_params({"lr": 0.1}, api_token="secret")
        provtel.log_artifact(__file__ if "__file__" in dir() else "missing.txt")
        with provtel.context("validation"):
            provtel.log_metric("y", 2)
        with provtel.run(name="named") as span:
            pass
        assert "torch" not in sys.modules  # the API never imports torch
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_with_an_sdk_and_no_torch_instrumentation_values_are_api_spans() -> None:
    result = _python(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        import provtel
        provtel.log_metric("accuracy", 0.5, step=3)
        with provtel.context("test"):
            provtel.log_metrics({"f1": 0.25, "auc": 1})
        provtel.log_params({"model": {"depth": 2}}, secret_key="k")
        spans = [dict(s.attributes) for s in exporter.get_finished_spans()]
        print(json.dumps([{k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}
                          for s in spans]))
        """
    )
    assert result.returncode == 0, result.stderr
    import json

    spans = json.loads(result.stdout)
    assert spans[0]["ml.log.name"] == ["accuracy"] and spans[0]["ml.log.value"] == [0.5]
    assert spans[0]["ml.log.step"] == [3] and spans[0]["ml.log.context"] == ["training"]
    assert spans[1]["ml.log.name"] == ["f1", "auc"] and spans[1]["ml.log.value"] == [0.25, 1.0]
    assert spans[1]["ml.log.context"] == ["test", "test"]
    assert spans[2]["ml.hparam.model.depth"] == 2
    assert spans[2]["ml.hparam.secret_key"] != "k"
