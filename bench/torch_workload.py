"""A small training script whose CPU time the torch benchmark compares, plain and instrumented.

Run by ``bench/bench_torch.py`` as ``python torch_workload.py ...`` and as
``opentelemetry-instrument python torch_workload.py ...``; runnable by hand the same way::

    .venv/bin/python bench/torch_workload.py --hidden 8 --batch 8 --steps 1500 --epochs 2

The script trains an MLP (``Linear(input, hidden)``, ReLU, ``depth - 1`` more hidden layers,
``Linear(hidden, 4)``) with SGD over a shuffled ``DataLoader``; after every epoch it runs a
validation pass (``--val-steps`` batches under ``torch.no_grad()``) and saves a checkpoint
(``torch.save`` of the state dict). One torch thread.

Around the whole loop (every epoch, validation and checkpoint) it reads ``time.process_time()``
(the CPU time of every thread of the process: the instrumentation's export, metric and sampling
threads included) and ``time.perf_counter()``, and the CPU time of each thread from
``/proc/self/task/<tid>/schedstat`` (Linux; nanoseconds on the CPU), named by the
``threading`` name of the thread. It prints one JSON line on stdout::

    {"cpu_s": ..., "wall_s": ..., "train_steps": ..., "threads": {"MainThread": s, ...}}

With ``--serve`` it stays up and runs one epoch (training, validation, checkpoint) for every
``go`` line on stdin, reporting each (see :func:`serve`): the benchmark keeps one such process
per configuration and lets them take epochs in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any


def thread_cpu() -> dict[int, int]:
    """Nanoseconds on the CPU of each thread of this process, by native thread id."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def thread_names() -> dict[int, str]:
    """``threading`` names of the live Python threads, by native thread id."""
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def per_thread(before: dict[int, int], after: dict[int, int], names: dict[int, str]) -> dict:
    """CPU seconds each thread used between two snapshots, summed by thread name."""
    used: dict[str, float] = {}
    for tid, ns in after.items():
        name = names.get(tid, "(not a Python thread)")
        used[name] = used.get(name, 0.0) + (ns - before.get(tid, 0)) / 1e9
    return used


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's arguments (also taken by ``bench/torch_chunks.py``)."""
    parser.add_argument("--input", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--depth", type=int, default=1, help="hidden layers")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500, help="training steps per epoch")
    parser.add_argument("--val-steps", type=int, default=150, help="validation batches per epoch")


def build(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(train data, validation data, model, optimizer) of the workload; one torch thread."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, nv = args.steps * args.batch, args.val_steps * args.batch
    train = TensorDataset(torch.randn(n, args.input), torch.randint(0, 4, (n,)))
    val = TensorDataset(torch.randn(nv, args.input), torch.randint(0, 4, (nv,)))
    layers: list[nn.Module] = [nn.Linear(args.input, args.hidden), nn.ReLU()]
    for _ in range(args.depth - 1):
        layers += [nn.Linear(args.hidden, args.hidden), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(args.hidden, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return train, val, model, optimizer


def evaluate_and_save(model: Any, val: Any, batch: int, checkpoint: str) -> None:
    """The end of every epoch: a validation pass under ``torch.no_grad()``, a checkpoint."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    model.eval()
    with torch.no_grad():
        for x, y in DataLoader(val, batch_size=batch):
            nn.functional.cross_entropy(model(x), y)
    torch.save(model.state_dict(), checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--serve", action="store_true", help="one epoch per 'go' line on stdin (bench_torch.py)"
    )
    args = parser.parse_args()

    from torch import nn
    from torch.utils.data import DataLoader

    train, val, model, optimizer = build(args)

    def epoch(checkpoint: str) -> None:
        model.train()
        for x, y in DataLoader(train, batch_size=args.batch, shuffle=True):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        evaluate_and_save(model, val, args.batch, checkpoint)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "model.pt")
        if args.serve:
            serve(epoch, checkpoint, args.steps)
            return
        threads0 = thread_cpu()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(args.epochs):
            epoch(checkpoint)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        threads = per_thread(threads0, thread_cpu(), thread_names())
    result = {
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall1 - wall0,
        "train_steps": args.steps * args.epochs,
        "threads": threads,
    }
    print(json.dumps(result), flush=True)


def serve(epoch: Callable[[str], None], checkpoint: str, steps: int) -> None:
    """Run one epoch per line read from stdin (until ``stop``), reporting each.

    Each report is one JSON line: the process's CPU time (``process_time``, all threads) at
    the start and the end of the epoch, its wall time, and each thread's CPU time since the
    process started (summed by name) at the start (``threads0``) and the end (``threads``), so
    that the caller sees the CPU used between epochs too (background threads working while the
    process waits for its next turn).
    """
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        threads0 = per_thread({}, thread_cpu(), thread_names())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        epoch(checkpoint)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        threads1 = per_thread({}, thread_cpu(), thread_names())
        report = {"cpu0": cpu0, "cpu1": cpu1, "wall_s": wall1 - wall0, "train_steps": steps}
        print(json.dumps({**report, "threads0": threads0, "threads": threads1}), flush=True)


if __name__ == "__main__":
    main()
