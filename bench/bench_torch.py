"""Benchmark: what the PyTorch instrumentation adds to training (per step, at start-up, at exit).

Budgets (DESIGN.md "Budgets"): added cost per training step <= 10 µs median and <= 1 % at
2 ms per step on a CPU reference workload; start-up added beyond ``opentelemetry-instrument``
itself <= 150 ms; finalising the document at exit <= 0.3 s for 10k steps. Run through
``make bench`` / ``python bench/run_all.py bench_torch``, or alone::

    .venv/bin/python bench/bench_torch.py [--quick]

It prints one Markdown section on stdout (the ``bench/run_all.py`` convention), progress on
stderr, and exits 1 when a budget fails.

Method:

1. **Per step**, in this process, one thread (``torch.set_num_threads(1)``): an MLP trained with
   SGD over an in-memory ``DataLoader`` (the common path: DataLoader, backward and optimizer
   hooks all run every step). Blocks of steps alternate plain / instrumented (ABBA order);
   ``TorchInstrumentor().instrument()`` before an instrumented block and ``uninstrument()``
   after it, with an SDK ``TracerProvider`` + ``BatchSpanProcessor`` (queue and delay as the
   provtel distro sets them) + the real ``ProvSpanExporter``, and a ``MeterProvider`` with the
   real ``ProvMetricExporter``, writing into a temporary directory. A step's time is the time
   between the starts of consecutive loop iterations, so it includes fetching the batch and
   every hook; the first steps of each block are dropped (pass start, the run's git lookup).
   In-process alternation was chosen over two alternating subprocesses because both arms then
   share one interpreter, one allocator and the same CPU state, and the drift of a shared
   machine cancels out block by block. "Added (median)" is the difference of the medians of all
   plain and all instrumented steps; "added (mean)" the difference of the means, which also
   carries the once-per-block work (spans, metrics, loss read-out) spread over the steps of a
   block. Workloads: a tiny model (the hooks' own cost, nothing else), ~2 ms and ~20 ms per
   step.
2. **Start-up**: wall time from launching ``opentelemetry-instrument python script.py`` to the
   end of the script's first training step (the script imports torch, builds a model and takes
   one step, then prints the time), with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch``
   and without; alternating, median of the paired differences.
3. **Exit**: a script takes 10,000 DataLoader steps under ``opentelemetry-instrument`` and prints
   the time after its last step; the time from then to the process's exit (PROV document
   written) is measured with the PyTorch instrumentation on and off, alternating.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from provtel.exporter.prov import ProvMetricExporter, ProvSpanExporter
from provtel.instrumentation.torch import TorchInstrumentor

BUDGET_STEP_US = 10.0
BUDGET_STEP_PERCENT = 1.0
BUDGET_STARTUP_MS = 150.0
BUDGET_EXIT_S = 0.3
EXIT_STEPS = 10_000

BIN = Path(sys.executable).parent
INSTRUMENT = BIN / "opentelemetry-instrument"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- 1. per step ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    width: int
    depth: int
    batch: int
    block: int  # steps per block
    pairs: int  # plain + instrumented blocks


def build(w: Workload) -> tuple[DataLoader[Any], nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    features = w.width
    for _ in range(w.depth):
        layers += [nn.Linear(features, w.width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(w.width, 10))
    data = TensorDataset(
        torch.randn(w.block * w.batch, w.width), torch.randint(0, 10, (w.block * w.batch,))
    )
    # batches are slices of one tensor (a batch sampler over a tensor-indexed dataset would
    # add its own per-sample cost to both arms); shuffle off: the same batches every block
    loader = DataLoader(data, batch_size=w.batch)
    return loader, model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def block_times(
    loader: DataLoader[Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> list[int]:
    """Nanoseconds of each step of one pass over ``loader`` (from iteration start to start)."""
    perf = time.perf_counter_ns
    times = []
    last = perf()
    for x, y in loader:
        now = perf()
        times.append(now - last)
        last = now
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    times.append(perf() - last)
    return times[1:]  # times[0] is the creation of the iterator (and the pass)


@contextmanager
def providers(directory: Path) -> Iterator[tuple[TracerProvider, MeterProvider]]:
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            ProvSpanExporter(output_dir=directory), max_queue_size=65536, schedule_delay_millis=500
        )
    )
    reader = PeriodicExportingMetricReader(
        ProvMetricExporter(output_dir=directory), export_interval_millis=10_000
    )
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        yield tracer_provider, meter_provider
    finally:
        meter_provider.shutdown()
        tracer_provider.shutdown()


@dataclass
class StepResult:
    workload: Workload
    plain: list[int]
    instrumented: list[int]
    pair_diffs: list[float]  # per pair: median(instrumented) - median(plain), ns

    @property
    def plain_median_us(self) -> float:
        return statistics.median(self.plain) / 1e3

    @property
    def added_median_us(self) -> float:
        return (statistics.median(self.instrumented) - statistics.median(self.plain)) / 1e3

    @property
    def added_mean_us(self) -> float:
        return (statistics.fmean(self.instrumented) - statistics.fmean(self.plain)) / 1e3

    @property
    def added_mean_percent(self) -> float:
        return 100 * self.added_mean_us * 1e3 / statistics.fmean(self.plain)

    @property
    def pair_spread_us(self) -> tuple[float, float]:
        q = statistics.quantiles(self.pair_diffs, n=4) if len(self.pair_diffs) > 1 else [0, 0, 0]
        return q[0] / 1e3, q[2] / 1e3


def measure_steps(w: Workload, directory: Path) -> StepResult:
    torch.set_num_threads(1)
    loader, model, optimizer = build(w)
    drop = max(2, w.block // 20)
    instrumentor = TorchInstrumentor()
    plain: list[int] = []
    instrumented: list[int] = []
    diffs: list[float] = []
    with providers(directory) as (tracer_provider, meter_provider):
        block_times(loader, model, optimizer)  # warm-up
        for pair in range(w.pairs):
            results: dict[bool, list[int]] = {}
            order = (False, True) if pair % 2 == 0 else (True, False)  # ABBA
            for on in order:
                if on:
                    instrumentor.instrument(
                        tracer_provider=tracer_provider, meter_provider=meter_provider
                    )
                try:
                    results[on] = block_times(loader, model, optimizer)[drop:]
                finally:
                    if on:
                        instrumentor.uninstrument()
            plain += results[False]
            instrumented += results[True]
            diffs.append(statistics.median(results[True]) - statistics.median(results[False]))
        log(
            f"  {w.name}: plain {statistics.median(plain) / 1e3:.1f} µs/step, "
            f"added {(statistics.median(instrumented) - statistics.median(plain)) / 1e3:+.2f} µs"
        )
    return StepResult(w, plain, instrumented, diffs)


# -- 2. and 3. subprocesses under opentelemetry-instrument ---------------------------------------

STARTUP_SCRIPT = """
import time
import torch
from torch import nn

model = nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
optimizer.zero_grad()
model(torch.randn(4, 8)).sum().backward()
optimizer.step()
print(time.time(), flush=True)
"""

EXIT_SCRIPT = f"""
import time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)
torch.manual_seed(0)
data = TensorDataset(torch.randn({EXIT_STEPS} * 4, 8), torch.randn({EXIT_STEPS} * 4, 1))
model = nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in DataLoader(data, batch_size=4):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
print(time.time(), flush=True)
"""


def user_env(output: Path, torch_on: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    env["OTEL_PYTHON_PROVTEL_OUTPUT_DIR"] = str(output)
    if not torch_on:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "provtel_torch"
    return env


def timed_run(script: Path, env: dict[str, str], instrumented: bool = True) -> tuple[float, float]:
    """(seconds from launch to the printed time, seconds from it to the exit)."""
    command = (
        [str(INSTRUMENT), sys.executable, str(script)]
        if instrumented
        else [sys.executable, str(script)]
    )
    start = time.time()
    result = subprocess.run(
        command, env=env, cwd=script.parent, capture_output=True, text=True, timeout=600
    )
    end = time.time()
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed:\n{result.stderr[-2000:]}")
    printed = float(result.stdout.strip().splitlines()[-1])
    return printed - start, end - printed


def measure_subprocess(script: Path, reps: int) -> dict[str, list[float]]:
    """Alternating runs with the PyTorch instrumentation off and on."""
    out: dict[str, list[float]] = {"off_first": [], "on_first": [], "off_exit": [], "on_exit": []}
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for on in order:
            with tempfile.TemporaryDirectory() as output:
                first, exit_s = timed_run(script, user_env(Path(output), on))
                if on:
                    documents = list(Path(output).glob("*/prov.json"))
                    assert len(documents) == 1, "the instrumented run left no document"
            key = "on" if on else "off"
            out[f"{key}_first"].append(first)
            out[f"{key}_exit"].append(exit_s)
        log(
            f"  {script.stem} {rep + 1}/{reps}: to first step off {out['off_first'][-1]:.3f} s / "
            f"on {out['on_first'][-1]:.3f} s; exit off {out['off_exit'][-1]:.3f} s / "
            f"on {out['on_exit'][-1]:.3f} s"
        )
    return out


def paired(on: list[float], off: list[float]) -> float:
    return statistics.median(a - b for a, b in zip(on, off, strict=True))


# -- report --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    quick = args.quick
    workloads = [
        Workload(
            "tiny model (hook cost)", 16, 1, 8, 1000 if not quick else 300, 10 if not quick else 2
        ),
        Workload("~2 ms/step", 512, 2, 64, 250 if not quick else 60, 12 if not quick else 2),
        Workload("~20 ms/step", 1024, 2, 128, 40 if not quick else 12, 8 if not quick else 2),
    ]
    start_reps = 2 if quick else 12
    exit_reps = 1 if quick else 3

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        log("per-step cost (in process, alternating blocks)")
        steps = [measure_steps(w, directory / f"steps{i}") for i, w in enumerate(workloads)]
        (directory / "startup.py").write_text(STARTUP_SCRIPT)
        (directory / "exit10k.py").write_text(EXIT_SCRIPT)
        log("start-up (subprocesses under opentelemetry-instrument)")
        plain_python = [
            timed_run(directory / "startup.py", user_env(directory, False), False)[0]
            for _ in range(3)
        ]
        startup = measure_subprocess(directory / "startup.py", start_reps)
        log(f"exit after {EXIT_STEPS} steps")
        exits = measure_subprocess(directory / "exit10k.py", exit_reps)

    at_2ms = steps[1]
    step_ok = (
        at_2ms.added_median_us <= BUDGET_STEP_US
        and at_2ms.added_mean_percent <= BUDGET_STEP_PERCENT
    )
    startup_added_ms = paired(startup["on_first"], startup["off_first"]) * 1e3
    startup_ok = startup_added_ms <= BUDGET_STARTUP_MS
    exit_on = statistics.median(exits["on_exit"])
    exit_added = paired(exits["on_exit"], exits["off_exit"])
    exit_ok = exit_on <= BUDGET_EXIT_S

    lines = [
        "## PyTorch instrumentation overhead",
        "",
        "What `provtel_torch` adds to a training script: per step (in process, plain and",
        "instrumented blocks of steps alternating, ABBA, one thread, an MLP trained with SGD",
        "over an in-memory DataLoader, spans to the real PROV exporter through a",
        "`BatchSpanProcessor`, metrics to the real PROV metric exporter), at start-up and at exit",
        "(subprocesses under `opentelemetry-instrument`, `provtel_torch` disabled vs enabled through",
        "`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`, alternating). A step's time runs from one loop",
        "iteration's start to the next, so fetching the batch and every hook are in it. *Added",
        "(median)* compares the medians of all steps; *added (mean)* the means, which include the",
        "work done once per block of 1000 steps or 1 s (spans, metrics, reading the losses).",
        "Method details in the docstring of `bench/bench_torch.py`.",
        "",
        "### Per training step",
        "",
        "| workload | steps per arm | plain step (median) | added (median) | added (mean) | added (mean) % | per-pair added, IQR |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in steps:
        w = r.workload
        low, high = r.pair_spread_us
        lines.append(
            f"| {w.name}: {w.depth}×Linear({w.width}), batch {w.batch} | {len(r.plain)} | "
            f"{r.plain_median_us:,.1f} µs | {r.added_median_us:+.2f} µs | {r.added_mean_us:+.2f} µs | "
            f"{r.added_mean_percent:+.3f} % | {low:+.1f} … {high:+.1f} µs |"
        )
    lines += [
        "",
        f"**{'PASS' if step_ok else 'FAIL'}**: added cost per step at ~2 ms/step "
        f"{at_2ms.added_median_us:+.2f} µs median (budget <= {BUDGET_STEP_US:g} µs) and "
        f"{at_2ms.added_mean_percent:+.3f} % of the mean step time, block work included "
        f"(budget <= {BUDGET_STEP_PERCENT:g} %).",
        "",
        "### Start-up",
        "",
        f"Launch to the end of the first training step, {start_reps} runs per arm (median):",
        "",
        "| configuration | launch → first step done |",
        "|---|---|",
        f"| `python script.py` (no OpenTelemetry) | {statistics.median(plain_python):.3f} s |",
        f"| `opentelemetry-instrument`, `provtel_torch` disabled | {statistics.median(startup['off_first']):.3f} s |",
        f"| `opentelemetry-instrument`, `provtel_torch` enabled | {statistics.median(startup['on_first']):.3f} s |",
        f"| added by `provtel_torch` (median of paired differences) | {startup_added_ms:+.0f} ms |",
        "",
        f"**{'PASS' if startup_ok else 'FAIL'}**: start-up added beyond `opentelemetry-instrument` "
        f"{startup_added_ms:+.0f} ms (budget <= {BUDGET_STARTUP_MS:g} ms).",
        "",
        "### Finalising at exit",
        "",
        f"From the end of the last of {EXIT_STEPS:,} training steps to the exit of the process (the",
        f"PROV document and its series files written), {exit_reps} runs per arm (median):",
        "",
        "| configuration | end of training → exit |",
        "|---|---|",
        f"| `provtel_torch` disabled | {statistics.median(exits['off_exit']):.3f} s |",
        f"| `provtel_torch` enabled | {exit_on:.3f} s |",
        f"| added by `provtel_torch` (median of paired differences) | {exit_added:+.3f} s |",
        "",
        f"**{'PASS' if exit_ok else 'FAIL'}**: finalising at exit after {EXIT_STEPS:,} steps takes "
        f"{exit_on:.3f} s in all (budget <= {BUDGET_EXIT_S:g} s).",
    ]
    print("\n".join(lines))
    return 0 if step_ok and startup_ok and exit_ok else 1


if __name__ == "__main__":
    sys.exit(main())
