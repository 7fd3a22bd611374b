"""Benchmark: ``provtel report`` on a 200k-step run, and the size of its HTML report.

Budget (issue 10): ``provtel report`` on a 200k-step run finishes in <= 3 s and its HTML report
stays <= 5 MB. Run through ``make bench`` / ``python bench/run_all.py bench_report``, or alone::

    .venv/bin/python bench/bench_report.py [--quick] [--repeat 3]

Workload: the run's document is made with the exporter's own code, from spans as the torch
instrumentation sends them (training 200k steps here would take hours): a run span, 20 epochs of
10 000 steps in step blocks of 1 000 steps (``ml.step.start_time``, ``duration``, ``data_wait``,
``forward``, ``backward``, ``optimizer``, ``loss``, ``learning_rate``, ``batch_size`` arrays), an
evaluation pass after each epoch (a 10-step block, ``ml.eval.loss``) and a checkpoint save after
each epoch, journaled by ``RunStore`` and finalised into ``prov.json`` with its series files
(200k rows each). A 10k-step run (1 epoch) is made the same way for the end-of-run summary.

Each measured command runs in a fresh subprocess (``python -m provtel.exporter.cli ...``: start-up
and imports included, as a user pays them); the rows are interleaved, ``--repeat`` rounds, and
the median is shown. CPU is the child's user+system time (``RUSAGE_CHILDREN``), wall time
beside it. The null row is ``provtel report --help`` (interpreter start and CLI imports).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provtel.exporter.prov.store import RunStore, create_run_dir

TRACE = "ab" * 16
BLOCK = 1000
BUDGET_S = 3.0
BUDGET_HTML = 5 * 1024 * 1024


def _span(
    span_id: str, parent: str | None, name: str, start: int, end: int, **attrs: Any
) -> dict[str, Any]:
    return {
        "trace_id": TRACE,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": "INTERNAL",
        "start": start,
        "end": end,
        "status": "UNSET",
        "status_description": None,
        "attributes": attrs,
        "events": [],
        "links": [],
        "scope": {"name": "provtel.instrumentation.torch", "version": "0.1.0"},
        "resource": {"service.name": "bench", "host.name": "bench"},
    }


def synthesise(root: Path, epochs: int, steps_per_epoch: int) -> Path:
    """A finished run of ``epochs`` x ``steps_per_epoch`` steps; returns its folder."""
    rng = random.Random(0)
    store = RunStore(create_run_dir(root, f"bench{epochs * steps_per_epoch}"))
    ids = iter(f"{i:016x}" for i in range(1, 10**9))
    run_id = next(ids)
    t = t0 = 1_700_000_000_000_000_000
    step, loss = 0, 5.0
    dataset = {
        "ml.dataset.name": "synthetic",
        "ml.dataset.class": "TensorDataset",
        "ml.dataset.size": steps_per_epoch * 32,
    }
    for epoch in range(epochs):
        epoch_id, epoch_start, spans = next(ids), t, []
        for first in range(0, steps_per_epoch, BLOCK):
            n = min(BLOCK, steps_per_epoch - first)
            starts, cols = (
                [],
                {
                    k: []
                    for k in (
                        "duration",
                        "data_wait",
                        "forward",
                        "backward",
                        "optimizer",
                        "loss",
                        "learning_rate",
                        "batch_size",
                    )
                },
            )
            block_start = t
            for _ in range(n):
                wait, fwd = rng.uniform(1e-4, 3e-3), rng.uniform(2e-3, 4e-3)
                bwd, opt = 2 * fwd, rng.uniform(3e-4, 6e-4)
                d = wait + fwd + bwd + opt + rng.uniform(0, 2e-4)
                loss = loss * 0.99997 + rng.gauss(0, 0.01)
                starts.append(t)
                for k, v in (
                    ("duration", d),
                    ("data_wait", wait),
                    ("forward", fwd),
                    ("backward", bwd),
                    ("optimizer", opt),
                    ("loss", loss),
                    ("learning_rate", 1e-3),
                    ("batch_size", 32),
                ):
                    cols[k].append(v)
                t += int(d * 1e9)
            spans.append(
                _span(
                    next(ids),
                    epoch_id,
                    "ml.step_block",
                    block_start,
                    t,
                    **{
                        "ml.activity": "step_block",
                        "ml.context": "training",
                        "ml.epoch": epoch,
                        "ml.step.first": step + first,
                        "ml.step.count": n,
                        "ml.step.start_time": starts,
                        **{f"ml.step.{k}": v for k, v in cols.items()},
                    },
                )
            )
        step += steps_per_epoch
        spans.append(
            _span(
                epoch_id,
                run_id,
                "ml.epoch",
                epoch_start,
                t,
                **{
                    "ml.activity": "epoch",
                    "ml.context": "training",
                    "ml.epoch": epoch,
                    "ml.pass.index": epoch,
                    "ml.pass.batches": steps_per_epoch,
                    **dataset,
                },
            )
        )
        eval_id, eval_start = next(ids), t
        starts = [t + i * 2_000_000 for i in range(10)]
        spans.append(
            _span(
                next(ids),
                eval_id,
                "ml.step_block",
                t,
                t + 20_000_000,
                **{
                    "ml.activity": "step_block",
                    "ml.context": "validation",
                    "ml.epoch": epoch,
                    "ml.step.first": step,
                    "ml.step.count": 10,
                    "ml.step.start_time": starts,
                    "ml.step.duration": [0.002] * 10,
                    "ml.step.data_wait": [0.0005] * 10,
                },
            )
        )
        t += 20_000_000
        spans.append(
            _span(
                eval_id,
                run_id,
                "ml.evaluation",
                eval_start,
                t,
                **{
                    "ml.activity": "evaluation",
                    "ml.context": "validation",
                    "ml.epoch": epoch,
                    "ml.pass.index": epoch,
                    "ml.pass.batches": 10,
                    "ml.eval.loss": loss * 1.1,
                    "ml.eval.batches": 10,
                    "ml.eval.samples": 320,
                    "ml.dataset.name": "synthetic-val",
                    "ml.dataset.class": "TensorDataset",
                },
            )
        )
        spans.append(
            _span(
                next(ids),
                run_id,
                "ml.checkpoint.save",
                t,
                t + 50_000_000,
                **{
                    "ml.activity": "checkpoint",
                    "ml.checkpoint.operation": "save",
                    "file.path": f"/ckpt/epoch_{epoch}.pt",
                    "file.size": 10_000_000,
                    "ml.checkpoint.digest": "sha256:" + f"{epoch:064x}",
                },
            )
        )
        t += 50_000_000
        store.add_spans(spans)
    store.add_spans(
        [
            _span(
                run_id,
                None,
                "ml.run",
                t0 - 2_000_000_000,
                t + 100_000_000,
                **{
                    "ml.activity": "run",
                    "ml.run.name": "bench",
                    "ml.hparam.lr": 1e-3,
                    "ml.hparam.batch_size": 32,
                    "ml.hparam.epochs": epochs,
                },
            )
        ]
    )
    return store.finalize().parent


def _timed(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k steps, one round")
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    epochs, per_epoch = (2, 10_000) if opts.quick else (20, 10_000)
    repeat = 1 if opts.quick else opts.repeat
    with tempfile.TemporaryDirectory(prefix="bench_report") as tmp:
        root = Path(tmp)
        print(f"synthesising a {epochs * per_epoch}-step run ...", file=sys.stderr)
        started = time.perf_counter()
        big = synthesise(root / "big", epochs, per_epoch)
        made_s = time.perf_counter() - started
        small = synthesise(root / "small", 1, 10_000)
        html = root / "report.html"
        rows: dict[str, tuple[list[str], str]] = {
            "null: `provtel report --help`": (["report", "--help"], ""),
            "`provtel report RUN` (text)": (["report", str(big)], "big"),
            "`provtel report RUN --json`": (["report", str(big), "--json"], "big"),
            "`provtel report RUN --html FILE`": (["report", str(big), "--html", str(html)], "big"),
            "end-of-run summary, 10k steps (`--summary`)": (
                ["report", str(small), "--summary"],
                "small",
            ),
        }
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in rows}
        for i in range(repeat):
            for name, (args, _) in rows.items():  # interleaved rounds
                print(f"round {i + 1}/{repeat}: {name}", file=sys.stderr)
                times[name].append(_timed(args))
        html_size = html.stat().st_size
        doc_size = (big / "prov.json").stat().st_size
        series = sum(p.stat().st_size for p in (big / "metrics").glob("*.csv"))
    steps = epochs * per_epoch
    print(f"## provtel report on a {steps // 1000}k-step run\n")
    print(
        f"A {steps}-step run ({epochs} epochs of {per_epoch} steps in blocks of {BLOCK}, an "
        "evaluation pass and a checkpoint after each epoch) synthesised from spans with the "
        f"exporter's own `RunStore` in {made_s:.1f} s: prov.json {doc_size / 1e6:.2f} MB, series "
        f"files {series / 1e6:.1f} MB. Each command in a fresh subprocess (start-up included), "
        f"{repeat} interleaved round(s), median; CPU = the child's user+system time.\n"
    )
    print("| command | CPU (s) | wall (s) |")
    print("|---|---:|---:|")
    cpus = {}
    for name, values in times.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        cpus[name] = cpu
        print(f"| {name} | {cpu:.2f} | {wall:.2f} |")
    print(f"\nHTML report: {html_size / 1e6:.2f} MB (charts bucketed to at most 600 points).\n")
    judged = [k for k in cpus if "RUN`" in k or "--json" in k]
    worst = max(cpus[k] for k in judged)
    ok = worst <= BUDGET_S and html_size <= BUDGET_HTML
    verdict = "PASS" if ok else "FAIL"
    print(
        f"**{verdict}** (budget: `provtel report` on a 200k-step run <= {BUDGET_S:.0f} s of CPU, "
        f"text and JSON, start-up included; its HTML <= 5 MB): {worst:.2f} s, HTML "
        f"{html_size / 1e6:.2f} MB"
        + (" — quick mode: a 20k-step run, not the budget's workload" if opts.quick else "")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
