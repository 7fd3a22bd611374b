"""The training thread's share of the per-step cost, measured inside one process.

``bench/bench_torch.py`` compares separate processes; there, two processes with the same
script can differ by tens of µs per step for reasons unrelated to the work they do (the rows
with no per-step work at all, ``provtel_torch`` disabled, show it), and most of that lands on
the main thread. Here one process trains the tiny model of issue 9 and switches the PyTorch
instrumentation on (``TorchInstrumentor().instrument()``, an SDK ``TracerProvider`` with a
``BatchSpanProcessor`` whose exporter drops the spans: the block spans are built and checked
by the SDK on the training thread as in a real run) and off (``uninstrument()``: every patch
and hook removed) for alternate epochs, and compares the main thread's CPU per step
(``time.thread_time()``) of each on epoch with the off epoch next to it. The first 100 steps
of an epoch are not timed (the run's start is the fixed cost). Other threads are not counted:
the benchmark measures them per thread in real processes. Run::

    .venv/bin/python bench/torch_hooks.py [--epochs 20] [--steps 1500]

It prints one JSON object: the median of the paired differences (µs per step), a 95 %
confidence interval of it (binomial order statistics), the plain step, and the raw pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from medians import median_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="pairs of epochs (on, off)")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    os.environ["OTEL_PYTHON_PROVTEL_TORCH_LIVE_METRICS"] = "false"

    import torch
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from provtel.instrumentation.torch import TorchInstrumentor

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = args.steps * 8
    data = TensorDataset(torch.randn(n, 16), torch.randint(0, 4, (n,)))
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    meters = NoOpMeterProvider()
    instrumentor = TorchInstrumentor()
    skip = 100

    def epoch() -> float:
        model.train()
        t = 0.0
        for i, (x, y) in enumerate(DataLoader(data, batch_size=8, shuffle=True)):
            if i == skip:
                t = time.thread_time()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return 1e6 * (time.thread_time() - t) / (args.steps - skip)

    epoch()  # warm-up, plain
    pairs = []
    for r in range(args.epochs):
        instrumentor.instrument(tracer_provider=provider, meter_provider=meters)
        on = epoch()
        instrumentor.uninstrument()
        off = epoch()
        pairs.append((on, off))
        print(
            f"  pair {r + 1}/{args.epochs}: {on - off:+.1f} µs/step",
            flush=True,
            file=sys.stderr,
        )
    diffs = [a - b for a, b in pairs]
    lo, hi = median_ci(diffs)
    print(
        json.dumps(
            {
                "main_added_us": statistics.median(diffs),
                "ci_us": [lo, hi],
                "plain_us": statistics.median(b for _, b in pairs),
                "pairs": pairs,
            }
        )
    )
    provider.shutdown()


if __name__ == "__main__":
    main()
