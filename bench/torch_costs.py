"""Per-step costs of provtel's pieces, one at a time, for ``bench/bench_torch.py``.

Run in a fresh process by the benchmark (``python bench/torch_costs.py``); prints one JSON
object on stdout. Each figure is the median ``time.thread_time()`` of repeated calls on this
thread, through public APIs only:

* ``block_span_ms``: an SDK span with the attributes of a step block of ``BLOCK`` steps (ten
  per-step arrays, as the PyTorch instrumentation sends them), started and ended with a
  ``TracerProvider`` and no processor: the SDK's attribute checks, element by element.
* ``block_export_ms``: :class:`~provtel.exporter.prov.ProvSpanExporter` exporting one such
  span (record conversion, journal, series files).
* ``block_span_packed_ms``, ``block_export_packed_ms``: the same with each per-step array packed
  into one string attribute (:mod:`provtel.semconv.columns`, as the instrumentation sends it);
  the span figure includes the packing.
* ``finalize_10k_ms``: :meth:`~provtel.exporter.prov.store.RunStore.finalize` of a run of ten
  such (packed) blocks, 10k steps: the document and the CSV files written from the series
  spools at exit.
* ``sdk_record_us``: one synchronous ``Histogram.record`` with one attribute (what a per-step
  metric costs), with a ``MeterProvider`` and one reader.
* ``collection_ms``: one metric collection and PROV export with provtel's host instrumentor
  (``PeriodicExportingMetricReader(ProvMetricExporter)``, ``force_flush``), after a first one
  that creates the series files.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

BLOCK = 1000
ARRAYS = ("duration", "data_wait", "forward", "backward", "optimizer", "loss")


def median_ms(f: Callable[[], Any], reps: int = 15) -> float:
    out = []
    for _ in range(reps):
        t = time.thread_time()
        f()
        out.append(time.thread_time() - t)
    return 1e3 * statistics.median(out)


def block_attributes(start_ns: int) -> dict[str, Any]:
    """Attributes shaped like a step block's (names from the instrumentation's semconv)."""
    attrs: dict[str, Any] = {
        "ml.context": "training",
        "ml.epoch": 0,
        "ml.step.first": 1,
        "ml.step.count": BLOCK,
        "ml.step.start_time": [start_ns + i * 500_000 for i in range(BLOCK)],
        "ml.step.batch_size": [8] * BLOCK,
    }
    for name in ARRAYS:
        attrs[f"ml.step.{name}"] = [random.random() * 1e-3 for _ in range(BLOCK)]
    attrs["ml.step.learning_rate"] = [0.01] * BLOCK
    return attrs


def packed(attrs: dict[str, Any]) -> dict[str, Any]:
    """The block's attributes with every per-step array packed (None on a checkout without
    :mod:`provtel.semconv.columns`)."""
    try:
        from provtel.semconv import columns
    except ImportError:
        return {}
    return {
        (columns.packed_name(k) if isinstance(v, list) else k): (
            columns.encode(v) if isinstance(v, list) else v
        )
        for k, v in attrs.items()
    }


def finalize_ms(out: str, t0: int, reps: int = 5) -> float:
    """Median CPU of finalising a run of ten packed blocks (10k steps)."""
    from pathlib import Path

    from provtel.exporter.prov.store import RunStore, create_run_dir

    times = []
    for rep in range(reps):
        store = RunStore(create_run_dir(Path(out) / "finalize", f"run{rep}"))
        records: list[dict[str, Any]] = []
        for b in range(10):
            attrs = block_attributes(t0 + b * BLOCK * 500_000)
            attrs["ml.step.first"] = 1 + b * BLOCK
            attrs = packed(attrs) or attrs
            records.append(
                {
                    "trace_id": "0" * 31 + "1",
                    "span_id": f"{b + 1:016x}",
                    "parent_span_id": None,
                    "name": "ml.step_block",
                    "kind": "INTERNAL",
                    "start": t0,
                    "end": t0 + 1,
                    "status": "UNSET",
                    "attributes": attrs,
                    "events": [],
                    "links": [],
                    "resource": {"service.name": "bench"},
                    "scope": {"name": "provtel.instrumentation.torch"},
                }
            )
        store.add_spans(records)
        t = time.thread_time()
        store.finalize()
        times.append(time.thread_time() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with tempfile.TemporaryDirectory() as out:
        os.environ["OTEL_PYTHON_PROVTEL_OUTPUT_DIR"] = out
        from provtel.exporter.prov import ProvMetricExporter, ProvSpanExporter
        from provtel.instrumentation.hardware.host import HostInstrumentor

        t0 = time.time_ns()
        bare = TracerProvider().get_tracer("provtel.instrumentation.torch")
        attrs = block_attributes(t0)
        results: dict[str, float] = {}
        results["block_span_ms"] = median_ms(
            lambda: bare.start_span("ml.step_block", attributes=attrs, start_time=t0).end(t0 + 1)
        )

        exporter = ProvSpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("provtel.instrumentation.torch")
        run = tracer.start_span("ml.run", start_time=t0)
        from opentelemetry import trace

        parent = trace.set_span_in_context(run)
        spans = []
        for _ in range(16):  # built first: only the export is timed
            spans.append(
                tracer.start_span(
                    "ml.step_block", context=parent, attributes=block_attributes(t0), start_time=t0
                )
            )
        pending = iter(spans)
        results["block_export_ms"] = median_ms(lambda: next(pending).end(t0 + 1))
        if packed(attrs):
            results["block_span_packed_ms"] = median_ms(
                lambda: bare.start_span(
                    "ml.step_block", attributes=packed(attrs), start_time=t0
                ).end(t0 + 1)
            )
            spans = [
                tracer.start_span(
                    "ml.step_block",
                    context=parent,
                    attributes=packed(block_attributes(t0)),
                    start_time=t0,
                )
                for _ in range(16)
            ]
            pending = iter(spans)
            results["block_export_packed_ms"] = median_ms(lambda: next(pending).end(t0 + 1))
        run.end()

        meter_provider = MeterProvider(
            metric_readers=[
                PeriodicExportingMetricReader(ProvMetricExporter(), export_interval_millis=math.inf)
            ]
        )
        histogram = meter_provider.get_meter("bench").create_histogram("ml.step.duration")
        labels = {"ml.context": "training"}
        calls = 2000
        results["sdk_record_us"] = (
            1e3 * median_ms(lambda: [histogram.record(0.0005, labels) for _ in range(calls)], 5)
        ) / calls
        HostInstrumentor().instrument(meter_provider=meter_provider)
        meter_provider.force_flush()  # the first collection creates the series files
        results["collection_ms"] = median_ms(meter_provider.force_flush, 9)
        HostInstrumentor().uninstrument()
        meter_provider.shutdown()
        provider.shutdown()
        results["finalize_10k_ms"] = finalize_ms(out, t0)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
