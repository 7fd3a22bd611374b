"""Benchmark: what the PyTorch instrumentation adds to an evaluation pass.

Budget (DESIGN.md "Budgets"): an evaluation pass costs <= 1 % more than uninstrumented, with no
added device synchronisation. Run through ``make bench`` / ``python bench/run_all.py
bench_evaluation``, or alone::

    .venv/bin/python bench/bench_evaluation.py [--quick] [--pairs N] [--rounds N]

It prints one Markdown section on stdout and exits 1 when the budget fails.

Method: a worker (``WORKER`` below) evaluates an MLP under ``model.eval()`` +
``torch.no_grad()`` with ``nn.MSELoss`` over ready batches, either from a DataLoader (a
DataLoader evaluation pass) or by hand (an evaluation pass from the model's state, as nanoGPT's
``estimate_loss``), and then, like such scripts, goes back to ``model.train()`` and takes one
training step (which decides that the pass was a validation and sends it: that work belongs to
the pass). It stays up and runs one such *cycle* (two training steps, the pass, one training
step) per line on stdin and reports its main thread's CPU over the pass and over the step after
it (``time.thread_time()``), the process's (``time.process_time()``) and each thread's
(``/proc/self/task/*/schedstat``).

**The verdict: one process** (``measure_toggled``). Two processes of the same script differ by
a few per cent here, more than the budget, so the verdict comes from ONE instrumented worker
(``opentelemetry-instrument``, everything live) whose PyTorch tracker is switched on or off for
the pass (``Tracker.enabled``; the training steps are instrumented either way), per pair of
cycles in random order. The figure adds three parts:

* the median of the pairs' differences of the main thread's CPU over the pass and the step
  after it (95 % CI from binomial order statistics): the hooks, the losses, the pass and block
  spans and the pass's decision;
* the other threads' CPU per instrumented pass: the span processor exports asynchronously (a
  pass's spans go out in some later cycle), so their CPU per cycle over the pairs minus that
  over a first phase of switched-off passes only, all of it charged to the instrumented passes;
* what the switched-off hooks still cost a pass (they are entered and return): ``timeit`` of
  the loss module's call with the tracker off against the plain one, per batch, times batches.

relative to the median CPU of the switched-off pass. The null row switches both halves off.

**Context: process pairs** (``measure``). Each instrumented worker has a twin (the same under
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch``) started with it; the two take their
cycles at the same time; the figure is the median of per-group differences of the process's
CPU, over groups of consecutive cycles spanning at least ``GROUP_S`` of wall time (the span
processor exports every 0.5 s), relative to the twin's median. Its null row pairs two twins.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
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

tracker = None
if len(sys.argv) > 4:  # "toggle": one process, its evaluations instrumented or not per cycle
    from provtel.instrumentation.torch.instrumentor import TorchInstrumentor
    tracker = TorchInstrumentor().tracker

def residue():
    # ns per batch that the switched-off hooks of an evaluation batch cost (timeit, best of
    # interleaved repeats): the loss module's wrapper and the functional loss's under it
    import timeit
    import torch.nn.functional as F
    a, b = torch.randn(64, 1), torch.randn(64, 1)
    wrapped = F.mse_loss
    original = wrapped.__wrapped__
    def plain():
        F.mse_loss = original
        try:
            return nn.Module.__call__(loss_fn, a, b)
        finally:
            F.mse_loss = wrapped
    def hooked():
        F.mse_loss = wrapped  # the same stores as plain
        try:
            return loss_fn(a, b)
        finally:
            F.mse_loss = wrapped
    tracker.enabled = False
    p, h = [], []
    with torch.no_grad():
        for _ in range(7):
            p.append(timeit.timeit(plain, number=5000))
            h.append(timeit.timeit(hooked, number=5000))
    tracker.enabled = True
    return max(0.0, (min(h) - min(p)) / 5000 * 1e9)

print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "residue" and tracker is not None:
        print(json.dumps({"residue_ns": residue()}), flush=True)
        continue
    if line.strip() not in ("go", "on", "off"):
        break
    w0 = time.perf_counter()
    train(2)
    m0 = time.thread_time()
    if tracker is not None:
        tracker.enabled = line.strip() != "off"
    evaluate()
    if tracker is not None:
        tracker.enabled = True  # the training step after it is instrumented either way
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

    def __init__(
        self, script: Path, mode: str, width: int, batches: int, on: bool, toggle: bool = False
    ) -> None:
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
                *(["toggle"] if toggle else []),
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

    def send(self, word: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
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


@dataclass
class Toggled:
    """One instrumented worker whose evaluations are instrumented or not, cycle by cycle."""

    name: str
    batches: int
    main: list[float] = field(default_factory=list)  # per pair, on - off: the pass + next step
    plain_pass: list[float] = field(default_factory=list)  # the off cycles' pass (main thread)
    other_s: float = 0.0  # other threads' CPU per instrumented pass (phase B over phase A)
    residue_s: float = 0.0  # the switched-off hooks of a pass (timeit per batch x batches)
    pairs: int = 0

    @property
    def base(self) -> float:
        return statistics.median(self.plain_pass)

    def interval(self) -> tuple[float, float, float]:
        """Added CPU per pass, % of the plain pass: the median of the main thread's paired
        differences and its 95 % CI, each plus the other threads' and the switched-off hooks'
        share."""
        m = statistics.median(self.main)
        lo, hi = median_ci(self.main)
        extra = self.other_s + self.residue_s
        m, lo, hi = (100 * (v + extra) / self.base for v in (m, lo, hi))
        return m, lo, hi


def others(threads: dict[str, float]) -> float:
    return sum(v for k, v in threads.items() if k != "MainThread")


def measure_toggled(
    script: Path, mode: str, width: int, batches: int, pairs: int, null: bool, seed: int = 0
) -> Toggled:
    """ONE instrumented worker; per pair of cycles (random order) one evaluation with the
    tracker on and one with it off (both off for the null row). The main thread's figure is the
    paired difference of its CPU over the pass and the training step after it (which decides
    and sends the pass). The span processor exports asynchronously (a pass's spans go out in
    some later cycle), so the other threads' share is taken apart: their CPU per cycle over the
    paired cycles minus that over a first phase of off cycles only, all of it charged to the
    instrumented passes (conservative: the clock-driven threads are in both phases alike)."""
    name = f"{mode} pass, {batches} batches of 64, width {width}" + (
        ", null row (both halves without the instrumentation)" if null else ""
    )
    row = Toggled(name, batches, pairs=pairs)
    order = random.Random(seed)
    worker = Worker(script, mode, width, batches, True, toggle=True)
    try:
        worker.ready()
        for _ in range(3):  # warm-up
            worker.send("on")
            worker.receive()
        base_n = max(20, pairs // 2)
        first = last = None
        for _ in range(base_n + 1):  # phase A: off cycles only
            worker.send("off")
            last = worker.receive()
            first = first or last
        assert first is not None and last is not None
        base_other = (others(last["threads"]) - others(first["threads"])) / base_n
        start = last
        for p in range(pairs):  # phase B: pairs
            on_first = order.random() < 0.5
            got = {}
            for on in (on_first, not on_first):
                worker.send("on" if on and not null else "off")
                c = worker.receive()
                got[on] = c["parts"]["pass"] + c["parts"]["step"]
                if not on:
                    row.plain_pass.append(c["parts"]["pass"])
                last = c
            row.main.append(got[True] - got[False])
            if p % 50 == 49:
                print(f"  {name}: pair {p + 1}/{pairs}", file=sys.stderr)
        other = (others(last["threads"]) - others(start["threads"])) / (2 * pairs)
        row.other_s = 0.0 if null else max(0.0, 2 * (other - base_other))
        worker.send("residue")
        row.residue_s = 0.0 if null else worker.receive()["residue_ns"] * 1e-9 * batches
    finally:
        worker.close()
    m, lo, hi = row.interval()
    print(f"  {name}: {m:+.2f} % (CI {lo:+.2f} … {hi:+.2f})", file=sys.stderr)
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
    parser.add_argument("--pairs", type=int, default=None, help="pairs of cycles, one process")
    parser.add_argument("--rounds", type=int, default=None, help="cycles per pair of twins")
    args = parser.parse_args()
    pairs = args.pairs or (20 if args.quick else 300)
    rounds = args.rounds or (20 if args.quick else 100)
    width, batches = 512, 32
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "eval_worker.py"
        script.write_text(WORKER)
        toggled = [
            measure_toggled(script, "dataloader", width, batches, pairs, False),
            measure_toggled(script, "hand", width, batches, pairs, False),
            measure_toggled(script, "hand", width, batches, pairs, True),
        ]
        rows = [
            measure(script, "dataloader", width, batches, rounds, False),
            measure(script, "hand", width, batches, rounds, False),
            measure(script, "hand", width, batches, rounds, True),
        ]
    load = os.getloadavg()
    print("## Evaluation passes\n")
    print(
        "What `provtel_torch` adds to an evaluation pass (losses recorded per batch and per "
        "pass, the pass span and its step block, their export), measured in ONE instrumented "
        "process: a worker (`WORKER` in `bench/bench_evaluation.py`: an MLP of width "
        f"{width}, batches of 64, `model.eval()` + `torch.no_grad()`, `nn.MSELoss`) runs cycles "
        "of two training steps, the pass, `model.train()` and the next training step (which "
        "decides the pass and sends it), and the tracker is on or off for the pass, per pair of "
        f"cycles in random order ({pairs} pairs per row). Added CPU = the median of the paired "
        "differences of the main thread's CPU over the pass and the step after it (95 % CI, "
        "binomial order statistics), plus the other threads' CPU per instrumented pass (the "
        "span processor exports asynchronously: their CPU per cycle over the pairs minus that "
        "over a first phase of switched-off passes, all of it charged to the instrumented "
        "passes), plus what the switched-off hooks cost a pass (`timeit` per batch). Relative "
        "to the median CPU of the switched-off pass. The null row switches both halves off. "
        f"Load average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
        f"({os.cpu_count()} cores, shared).\n"
    )
    print(
        "| workload | plain pass CPU | added: main thread (95 % CI) | other threads "
        "| switched-off hooks | added | added % (95 % CI) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in toggled:
        m = statistics.median(t.main)
        lo, hi = median_ci(t.main)
        p, p_lo, p_hi = t.interval()
        print(
            f"| {t.name} | {t.base * 1e3:.2f} ms | {m * 1e6:+.0f} µs ({lo * 1e6:+.0f} … "
            f"{hi * 1e6:+.0f}) | {t.other_s * 1e6:+.0f} µs | {t.residue_s * 1e6:+.0f} µs | "
            f"{(m + t.other_s + t.residue_s) * 1e6:+.0f} µs | {p:+.2f} % "
            f"({p_lo:+.2f} … {p_hi:+.2f}) |"
        )
    print(
        "\nThe same workloads as process pairs (context: an instrumented worker and a twin "
        "under `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch`, cycles at the same time; CPU "
        f"of every thread per cycle over groups of cycles of >= {GROUP_S:g} s; median of the "
        f"per-group differences over {rounds} cycles per pair). Two processes of the same "
        "script differ by a few per cent here (the null row), so pairs cannot resolve 1 %:\n"
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
    print("\nBy thread, instrumented DataLoader worker of the pairs (median CPU per cycle):\n")
    print("\n".join(thread_table(rows[0])))

    worst = max(toggled[:2], key=lambda t: t.interval()[0])
    m, lo, hi = worst.interval()
    n_m, n_lo, n_hi = toggled[2].interval()
    if hi <= BUDGET_PERCENT:
        verdict = "PASS"
    elif lo > BUDGET_PERCENT:
        verdict = "FAIL"
    else:
        verdict = "NOT RESOLVED"
    print(
        f"\n**{verdict}**: an evaluation pass costs {m:+.2f} % CPU over uninstrumented "
        f"({worst.name}; 95 % CI {lo:+.2f} … {hi:+.2f} %; budget <= {BUDGET_PERCENT:g} %; null "
        f"row {n_m:+.2f} %, CI {n_lo:+.2f} … {n_hi:+.2f} %). PASS needs the whole interval within "
        "budget, FAIL all of it above, NOT RESOLVED otherwise (more pairs resolve more)."
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
