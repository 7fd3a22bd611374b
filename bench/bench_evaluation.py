"""Benchmark: what the PyTorch instrumentation adds to an evaluation pass.

Budget (DESIGN.md "Budgets"): an evaluation pass costs <= 1 % more than uninstrumented, with no
added device synchronisation. Run through ``make bench`` / ``python bench/run_all.py
bench_evaluation``, or alone::

    .venv/bin/python bench/bench_evaluation.py [--quick]

It prints one Markdown section on stdout and exits 1 when the budget fails.

Method: a worker script (below) evaluates an MLP under ``model.eval()`` + ``torch.no_grad()``
with ``nn.MSELoss`` over ready batches, either from a DataLoader (a DataLoader evaluation pass)
or by hand (an evaluation pass from the model's state, as nanoGPT's ``estimate_loss``), a few
training steps between passes so that each pass is a validation. It runs under
``opentelemetry-instrument`` with the PyTorch instrumentation on ("instrumented") or off
(``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=provtel_torch``, "plain"), one thread, and reports the
CPU time (``time.process_time()``: every thread of the process) and wall time of each pass.
Processes alternate (plain, instrumented, instrumented, plain ...) and the verdict compares the
medians of all passes; the null row compares two plain arms, what the machine can resolve. The
per-batch cost (the loss hook, reading a CPU loss once, the batch event) is the difference
divided by the batches of a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUDGET_PERCENT = 1.0
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

WORKER = r"""
import json, os, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
torch.set_num_threads(1)
width, batches, passes, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width),
                      nn.ReLU(), nn.Linear(width, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
loss_fn = nn.MSELoss()
x = torch.randn(batches * 64, width)
y = torch.randn(batches * 64, 1)
val = TensorDataset(x, y)
def train_a_little():
    model.train()
    for i in range(2):
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
out = []
for k in range(passes + 1):
    train_a_little()
    c0, w0 = time.process_time(), time.perf_counter()
    evaluate()
    c1, w1 = time.process_time(), time.perf_counter()
    if k:  # the first pass warms up
        out.append((c1 - c0, w1 - w0))
train_a_little()
print(json.dumps(out))
"""


@dataclass
class Row:
    name: str
    batches: int
    plain_cpu: float
    added_cpu: float
    plain_wall: float
    added_wall: float

    @property
    def percent(self) -> float:
        return 100.0 * self.added_cpu / self.plain_cpu if self.plain_cpu else 0.0


def _run(worker: Path, mode: str, width: int, batches: int, passes: int, on: bool) -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "prov"
    env["OTEL_METRICS_EXPORTER"] = "prov"
    if not on:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "provtel_torch"
    with tempfile.TemporaryDirectory() as out:
        env["OTEL_PYTHON_PROVTEL_OUTPUT_DIR"] = out
        result = subprocess.run(
            [
                str(BIN / "opentelemetry-instrument"),
                sys.executable,
                str(worker),
                str(width),
                str(batches),
                str(passes),
                mode,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(mode: str, width: int, batches: int, passes: int, rounds: int, null: bool) -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "eval_worker.py"
        worker.write_text(WORKER)
        a: list = []
        b: list = []
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for on in order:
                got = _run(worker, mode, width, batches, passes, on and not null)
                (b if on else a).extend(got)
            print(f"  {mode} width {width} round {r + 1}/{rounds}", file=sys.stderr)
    pc = statistics.median(c for c, _ in a)
    pw = statistics.median(w for _, w in a)
    ic = statistics.median(c for c, _ in b)
    iw = statistics.median(w for _, w in b)
    name = f"{mode} pass, {batches} batches of 64, width {width}" + (
        ", null run (both plain)" if null else ""
    )
    return Row(name, batches, pc, ic - pc, pw, iw - pw)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    rounds, passes = (2, 5) if args.quick else (6, 20)
    rows = [
        measure("dataloader", 512, 16, passes, rounds, False),
        measure("hand", 512, 16, passes, rounds, False),
        measure("hand", 512, 16, passes, rounds, True),
    ]
    print("## Evaluation passes\n")
    print(
        "What `provtel_torch` adds to an evaluation pass (losses recorded per batch and per "
        "pass), measured against the same script with the PyTorch instrumentation off; "
        "CPU time of the whole process per pass (`time.process_time()`), wall time beside "
        "it; alternating processes, medians of all passes. Method in the docstring of "
        "`bench/bench_evaluation.py`.\n"
    )
    print(
        "| workload | plain pass CPU | added CPU | added % | per batch | plain wall | added wall |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.name} | {r.plain_cpu * 1e3:.2f} ms | {r.added_cpu * 1e6:+.0f} µs | "
            f"{r.percent:+.2f} % | {r.added_cpu / r.batches * 1e6:+.1f} µs | "
            f"{r.plain_wall * 1e3:.2f} ms | {r.added_wall * 1e6:+.0f} µs |"
        )
    worst = max(rows[0].percent, rows[1].percent)
    verdict = "PASS" if worst <= BUDGET_PERCENT else "FAIL"
    print(
        f"\n**{verdict}**: an evaluation pass costs {worst:+.2f} % CPU over uninstrumented "
        f"(budget <= {BUDGET_PERCENT:g} %); null run {rows[2].percent:+.2f} %."
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
