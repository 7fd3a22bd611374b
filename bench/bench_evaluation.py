"""Benchmark: what the PyTorch instrumentation adds to an evaluation pass.

Budget (DESIGN.md "Budgets"): an evaluation pass costs <= 1 % more than uninstrumented, with no
added device synchronisation. Run through ``make bench`` / ``python bench/run_all.py
bench_evaluation``, or alone::

    .venv/bin/python bench/bench_evaluation.py [--quick] [--rounds N]

It prints one Markdown section on stdout and exits 1 when the budget fails.

Method: a worker (``WORKER`` below) evaluates an MLP under ``model.eval()`` +
``torch.no_grad()`` with ``nn.MSELoss`` over ready batches, either from a DataLoader (a
DataLoader evaluation pass) or by hand (an evaluation pass from the model's state, as nanoGPT's
``estimate_loss``), and then, like such scripts, goes back to ``model.train()`` and takes one
training step (which decides that the pass was a validation and sends it: that work belongs to
the pass). It stays up and runs one such *cycle* (two training steps, the pass, one training
step) per ``go`` line on stdin and reports the process's CPU time so far
(``time.process_time()``: every thread, the span processor's export included) and each thread's
(``/proc/self/task/*/schedstat``). The figure is taken over *groups* of consecutive cycles that
span at least ``GROUP_S`` of wall time, since the span processor exports every 0.5 s (a single
cycle may or may not hold the export of its spans; a group does), per cycle.

Each instrumented worker (``opentelemetry-instrument`` with the PyTorch instrumentation on)
has a twin (the same under ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch``: the SDK,
exporters and hardware instrumentors are there, the instrumentation of evaluation is not)
started with it; the two take their cycles *at the same time* (a pair meets the same load from
the rest of this shared machine); the figure is the median of the per-group differences
(interquartile range beside it), relative to the twin's median. The null row pairs two twins:
what the machine resolves. The three training steps of a cycle and the training pass the
evaluation splits off count against the evaluation (conservative: a few steps' cost, see the
bench_torch section, against a pass of 32 batches).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from medians import median_ci

BUDGET_PERCENT = 1.0
GROUP_S = 0.6  # least wall time of a group of cycles (the span processor exports every 0.5 s)
BIN = Path(sys.executable).parent

WORKER = r"""
import json, os, sys, threading, time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
torch.set_num_threads(1)
width, batches, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width),
                      nn.ReLU(), nn.Linear(width, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
loss_fn = nn.MSELoss()
x = torch.randn(batches * 64, width)
y = torch.randn(batches * 64, 1)
val = TensorDataset(x, y)

def thread_cpu():
    out = {}
    names = {t.native_id: t.name for t in threading.enumerate()}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError):
            continue
        name = names.get(int(tid), "(other)")
        out[name] = out.get(name, 0) + ns
    return out

def train(steps):
    model.train()
    for i in range(steps):
        loss = loss_fn(model(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64])
        optimizer.zero_grad(); loss.backward(); optimizer.step()

def evaluate():
    model.eval()
    total = 0.0
    with torch.no_grad():
        if mode == "dataloader":
            for xb, yb in DataLoader(val, batch_size=64):
                total += loss_fn(model(xb), yb).item()
        else:
            for i in range(batches):
                total += loss_fn(model(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64]).item()
    return total

print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "go":
        break
    w0 = time.perf_counter()
    train(2)
    m0 = time.thread_time()
    evaluate()
    m1 = time.thread_time()
    train(1)  # model.train() and the next step: the pass is decided and sent
    m2 = time.thread_time()
    c1, w1, t1 = time.process_time(), time.perf_counter(), thread_cpu()
    threads = {k: v / 1e9 for k, v in t1.items()}
    parts = {"pass": m1 - m0, "step": m2 - m1}
    print(json.dumps({"cpu": c1, "wall": w1 - w0, "threads": threads, "parts": parts}), flush=True)
"""


class Worker:
    """One worker process: one cycle per ``go``."""

    def __init__(self, script: Path, mode: str, width: int, batches: int, on: bool) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.pop("PYTHONPATH", None)
        if not on:
            env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "provtel_torch"
        self.out = tempfile.TemporaryDirectory()
        env["OTEL_PYTHON_PROVTEL_OUTPUT_DIR"] = self.out.name
        env["OTEL_PYTHON_PROVTEL_SUMMARY"] = "false"
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [
                str(BIN / "opentelemetry-instrument"),
                sys.executable,
                str(script),
                str(width),
                str(batches),
                mode,
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )

    def _fail(self, what: str) -> RuntimeError:
        self.stderr.seek(0)
        return RuntimeError(f"evaluation worker: {what}\n{self.stderr.read()[-3000:]}")

    def ready(self) -> None:
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise self._fail("did not start")

    def send(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def receive(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise self._fail("ended")
        result: dict = json.loads(line)
        return result

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        code = self.process.wait(timeout=300)
        self.stderr.close()
        self.out.cleanup()
        if code != 0:
            raise RuntimeError(f"evaluation worker exited with {code}")


@dataclass
class Row:
    name: str
    batches: int
    plain_cpu: list[float] = field(default_factory=list)  # the twin's cycle CPU, per round
    added_cpu: list[float] = field(default_factory=list)  # instrumented - twin, per round
    plain_wall: list[float] = field(default_factory=list)
    added_wall: list[float] = field(default_factory=list)
    threads: list[dict[str, float]] = field(default_factory=list)  # instrumented, per group
    group: int = 1  # cycles per group
    parts: dict[str, float] = field(default_factory=dict)  # main thread, added, per cycle part
    pass_cpu: float = 0.0  # the twin's main-thread CPU of the pass alone (median)

    @property
    def base(self) -> float:
        return statistics.median(self.plain_cpu)

    @property
    def added(self) -> float:
        return statistics.median(self.added_cpu)

    @property
    def percent(self) -> float:
        return 100.0 * self.added / self.base

    def iqr_percent(self) -> tuple[float, float]:
        q = statistics.quantiles(self.added_cpu, n=4)
        return 100.0 * q[0] / self.base, 100.0 * q[2] / self.base


def measure(script: Path, mode: str, width: int, batches: int, rounds: int, null: bool) -> Row:
    twin = Worker(script, mode, width, batches, False)
    other = Worker(script, mode, width, batches, not null)
    name = f"{mode} pass, {batches} batches of 64, width {width}" + (
        ", null row (both without the instrumentation)" if null else ""
    )
    row = Row(name, batches)
    cycles: list[tuple[dict, dict]] = []
    try:
        twin.ready()
        other.ready()
        for r in range(rounds + 3):  # three warm-up cycles
            twin.send()
            other.send()
            cycles.append((twin.receive(), other.receive()))
            if r % 30 == 29:
                print(f"  {name}: cycle {r + 1}/{rounds + 3}", file=sys.stderr)
    finally:
        for w in (twin, other):
            w.close()
    # Groups of consecutive cycles spanning >= GROUP_S of wall time: the span processor exports
    # every 0.5 s, so a group holds the export of its passes (a single cycle may or may not).
    wall = statistics.median(a["wall"] for a, _ in cycles[3:])
    size = max(1, math.ceil(GROUP_S / wall))
    row.group = size
    for g in range(3, len(cycles) - size + 1, size):
        (a0, b0), (a1, b1) = cycles[g - 1], cycles[g + size - 1]
        plain = (a1["cpu"] - a0["cpu"]) / size
        instrumented = (b1["cpu"] - b0["cpu"]) / size
        row.plain_cpu.append(plain)
        row.added_cpu.append(instrumented - plain)
        wa = sum(cycles[k][0]["wall"] for k in range(g, g + size)) / size
        wb = sum(cycles[k][1]["wall"] for k in range(g, g + size)) / size
        row.plain_wall.append(wa)
        row.added_wall.append(wb - wa)
        row.threads.append(
            {k: (v - b0["threads"].get(k, 0.0)) / size for k, v in b1["threads"].items()}
        )
    for part in ("pass", "step"):
        row.parts[part] = statistics.median(
            b["parts"][part] - a["parts"][part] for a, b in cycles[3:]
        )
    row.pass_cpu = statistics.median(a["parts"]["pass"] for a, _ in cycles[3:])
    print(
        f"  {name}: {row.percent:+.2f} % ({len(row.added_cpu)} groups of {size})", file=sys.stderr
    )
    return row


def thread_table(row: Row) -> list[str]:
    names = sorted({k for t in row.threads for k in t})
    lines = ["| thread | CPU per cycle (median) |", "|---|---:|"]
    for k in names:
        v = statistics.median(t.get(k, 0.0) for t in row.threads)
        if v >= 1e-6:
            lines.append(f"| {k} | {v * 1e6:,.0f} µs |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="cycles per pair")
    args = parser.parse_args()
    rounds = args.rounds or (20 if args.quick else 150)
    width, batches = 512, 32
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "eval_worker.py"
        script.write_text(WORKER)
        rows = [
            measure(script, "dataloader", width, batches, rounds, False),
            measure(script, "hand", width, batches, rounds, False),
            measure(script, "hand", width, batches, rounds, True),
        ]
    load = os.getloadavg()
    print("## Evaluation passes\n")
    print(
        "What `provtel_torch` adds to an evaluation pass (losses recorded per batch and per "
        "pass, the pass span and its step block, their export), against the same worker with "
        "the PyTorch instrumentation off, run at the same time (paired twins); CPU of every "
        "thread of the process per cycle: two training steps, the pass, `model.train()` and "
        "the next training step (which decides the pass), the export of its spans; taken over "
        f"groups of cycles of >= {GROUP_S:g} s (the span processor exports every 0.5 s). Median "
        f"of the per-group differences over {rounds} cycles per pair; method in the docstring "
        "of `bench/bench_evaluation.py`. Load average at the end: "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} ({os.cpu_count()} cores, shared).\n"
    )
    print(
        "| workload | plain cycle CPU | added CPU | added % | interquartile range | per batch "
        "| plain wall | added wall |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lo, hi = r.iqr_percent()
        print(
            f"| {r.name} | {r.base * 1e3:.2f} ms | {r.added * 1e6:+.0f} µs | "
            f"{r.percent:+.2f} % | {lo:+.2f} … {hi:+.2f} % | "
            f"{r.added / r.batches * 1e6:+.1f} µs | "
            f"{statistics.median(r.plain_wall) * 1e3:.2f} ms | "
            f"{statistics.median(r.added_wall) * 1e6:+.0f} µs |"
        )
    print(
        "\nThe main thread alone (`time.thread_time()` around the pass, and around the "
        "training step after it), median of the per-cycle differences with the twin:\n"
    )
    print("| workload | the pass: twin | added | added % | the step after it: added |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.pass_cpu * 1e3:.2f} ms | {r.parts['pass'] * 1e6:+.0f} µs | "
            f"{100 * r.parts['pass'] / r.pass_cpu:+.2f} % | {r.parts['step'] * 1e6:+.0f} µs |"
        )
    print("\nBy thread, instrumented DataLoader worker (median CPU per cycle):\n")
    print("\n".join(thread_table(rows[0])))
    worst = max(rows[:2], key=lambda r: r.percent)
    lo, hi = (100 * v / worst.base for v in median_ci(worst.added_cpu))
    n_lo, n_hi = (100 * v / rows[2].base for v in median_ci(rows[2].added_cpu))
    if hi <= BUDGET_PERCENT:
        verdict = "PASS"
    elif lo > BUDGET_PERCENT:
        verdict = "FAIL"
    else:
        verdict = "NOT RESOLVED"
    print(
        f"\n**{verdict}**: an evaluation pass costs {worst.percent:+.2f} % CPU over "
        f"uninstrumented ({worst.name}; 95 % CI of the median {lo:+.2f} … {hi:+.2f} %; budget "
        f"<= {BUDGET_PERCENT:g} %; null row {rows[2].percent:+.2f} %, CI {n_lo:+.2f} … "
        f"{n_hi:+.2f} %). PASS needs the whole interval within budget, FAIL all of it above."
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
