"""The per-step cost resolved inside one instrumented process: alternating chunks of steps.

Comparing two processes (``bench/bench_torch.py``'s pairs) cannot resolve a few µs per step on a
shared 2-core machine: two processes running the same script differ by tens of µs per step for
reasons that have nothing to do with their work. Here ONE process, started the way a user starts
it (``opentelemetry-instrument python bench/torch_chunks.py``: the distro, the PROV exporters,
the hardware instrumentors, the batch span processor and the metric reader are all live), trains
the model of ``bench/torch_workload.py`` with the same arguments (by default the tiny model of
issue 9: 16→8→4, batch 8, a shuffled ``DataLoader``; every epoch ends with a validation pass and
a checkpoint) and switches the PyTorch instrumentation's tracker on and off
(``Tracker.enabled``) for alternating chunks of ``--chunk`` training steps. The chunks come in
pairs, each pair in a random order (a private ``random.Random``), so the load of the rest of the
machine, which drifts over seconds, meets both halves of a pair alike.

Per chunk it reads ``time.process_time()`` (the CPU of every thread of the process) and
``time.thread_time()`` (the training thread's); a pair's difference divided by the chunk's steps
is one sample of what a step costs. The figure is the **mean** of the samples, not the median:
work that comes once per block (the block span on the training thread, its export on the span
processor's thread) lands in some chunks and not in others, and a mean counts it at its share.
Its 95 % confidence interval is the normal one of a mean of many samples (reported with the
sample count). The training thread's share and the other threads' share are reported apart, and
beside them each instrumentation thread's CPU per instrumented step
(``/proc/self/task/*/schedstat``), an upper bound since the clock-driven threads (metric reader,
hardware sampler) also run during the off chunks.

What the chunks cannot see: with the tracker switched off, each hook is still entered and
returns at its first check; ``--entry`` measures that residue (``timeit`` of each hook switched
off against no hook) and the report adds it to the figure. Validation passes and checkpoints run
instrumented and are not timed here (``bench/bench_evaluation.py`` measures evaluation passes).

It prints one JSON object on stdout. Run by ``bench/bench_torch.py``, or by hand::

    .venv/bin/opentelemetry-instrument .venv/bin/python bench/torch_chunks.py --pairs 300
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import time
import timeit
from typing import Any

from medians import mean_ci
from torch_workload import (
    add_model_arguments,
    build,
    evaluate_and_save,
    per_thread,
    thread_cpu,
    thread_names,
)


def entry_ns(tracker: Any, torch: Any) -> dict[str, float]:
    """What each hook costs when the tracker is off (it is entered and returns), in ns: the
    part of a step the chunks cannot see. ``timeit`` best of 5 of the switched-off hook against
    the same call without it."""
    from provtel.instrumentation import _losses
    from provtel.instrumentation.torch import loader as loader_hooks
    from provtel.instrumentation.torch.instrumentor import TorchInstrumentor

    inst = TorchInstrumentor()
    noop = lambda *a, **k: None  # noqa: E731
    n = 5000

    def added(f: Any, base: Any) -> float:
        """Best of interleaved repeats of ``f`` minus best of ``base``: the calls' cost drifts
        within a process (allocator, caches), so the two are timed turn about."""
        a, b = [], []
        for _ in range(7):
            a.append(timeit.timeit(f, number=n))
            b.append(timeit.timeit(base, number=n))
        return (min(a) - min(b)) / n * 1e9

    was = tracker.enabled
    tracker.enabled = False
    try:
        x = torch.randn(8, 4, requires_grad=True)
        y = torch.randint(0, 4, (8,))

        class Passthrough(torch.nn.modules.loss._Loss):  # a loss module as cheap as can be
            def forward(self, a: Any, b: Any) -> Any:
                return a

        crit = Passthrough()
        original = torch.nn.Module.__call__
        module = _losses.module_call(original, torch.compiler.is_compiling, torch.is_grad_enabled)
        backward = inst._backward(tracker)(noop)
        pre, post = inst._optimizer_pre(tracker), inst._optimizer_post(tracker)
        batch = [x, y]

        class Batches:
            def __next__(self) -> Any:
                return batch

        raw = Batches()
        proxy = loader_hooks.LoaderIterator(Batches(), None, tracker)
        optimizer = torch.optim.SGD([x], lr=0.1)
        out = {
            "loss module": added(lambda: module(crit, x, y), lambda: original(crit, x, y)),
            "backward": added(
                lambda: backward(x, None, None, False, inputs=None),
                lambda: noop(x, None, None, False, inputs=None),
            ),
            "optimizer pre+post": added(
                lambda: (pre(optimizer, (), {}), post(optimizer, (), {})),
                lambda: None,  # without the instrumentation torch calls no hook at all
            ),
            "DataLoader next": added(lambda: next(proxy), lambda: next(raw)),
        }
    finally:
        tracker.enabled = was
    return {k: max(0.0, v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300, help="pairs of chunks (on, off)")
    parser.add_argument(
        "--chunk", type=int, default=None, help="training steps per chunk (a tenth of an epoch)"
    )
    add_model_arguments(parser)  # the workload's, as bench/torch_workload.py takes them
    parser.add_argument("--seed", type=int, default=0, help="order of the chunks in each pair")
    args = parser.parse_args()

    import tempfile

    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from provtel.instrumentation.torch.instrumentor import TorchInstrumentor

    tracker = TorchInstrumentor().tracker  # the distro's instance (a singleton)
    if tracker is None:
        sys.exit("torch_chunks.py runs under opentelemetry-instrument with provtel_torch on")

    train, val, model, optimizer = build(args)
    order = random.Random(args.seed)
    args.chunk = args.chunk or args.steps // 10
    chunks_per_epoch = args.steps // args.chunk
    if chunks_per_epoch < 2 or chunks_per_epoch % 2:
        sys.exit("--steps must hold an even number (>= 2) of chunks")
    total, main_thread = [], []  # per pair: (on - off) / chunk, µs per step
    plain_steps = []

    def epoch(checkpoint: str, timed: bool) -> None:
        model.train()
        tracker.enabled = True  # the DataLoader's iterator is wrapped when it is created
        plan = []
        for _ in range(chunks_per_epoch // 2):
            plan += [True, False] if order.random() < 0.5 else [False, True]
        marks = []
        for i, (x, y) in enumerate(DataLoader(train, batch_size=args.batch, shuffle=True)):
            if i % args.chunk == 0:
                marks.append((time.process_time(), time.thread_time()))
                tracker.enabled = plan[i // args.chunk] if timed else True
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        marks.append((time.process_time(), time.thread_time()))
        tracker.enabled = True
        if timed:
            per = [
                ((b[0] - a[0]) * 1e6 / args.chunk, (b[1] - a[1]) * 1e6 / args.chunk)
                for a, b in itertools.pairwise(marks)
            ]
            for k in range(0, len(plan), 2):
                on, off = (per[k], per[k + 1]) if plan[k] else (per[k + 1], per[k])
                total.append(on[0] - off[0])
                main_thread.append(on[1] - off[1])
                plain_steps.append(off[0])
        evaluate_and_save(model, val, args.batch, checkpoint)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "model.pt")
        epoch(checkpoint, timed=False)  # warm-up: the run's first-step work is fixed cost
        threads0 = thread_cpu()
        epochs = 0
        while len(total) < args.pairs:
            epoch(checkpoint, timed=True)
            epochs += 1
            print(f"  {len(total)}/{args.pairs} pairs", file=sys.stderr, flush=True)
        used = per_thread(threads0, thread_cpu(), thread_names())
    on_steps = epochs * args.steps // 2
    threads = {name: s * 1e6 / on_steps for name, s in used.items() if name != "MainThread"}
    entry = entry_ns(tracker, torch)
    m, lo, hi = mean_ci(total)
    mm, mlo, mhi = mean_ci(main_thread)
    others = [t - u for t, u in zip(total, main_thread, strict=True)]
    om, olo, ohi = mean_ci(others)
    result = {
        "pairs": len(total),
        "chunk": args.chunk,
        "plain_us": statistics.median(plain_steps),
        "all_threads_us": [m, lo, hi],
        "main_thread_us": [mm, mlo, mhi],
        "other_threads_us": [om, olo, ohi],
        "median_all_threads_us": statistics.median(total),
        "entry_ns": entry,
        "threads_us_per_on_step": threads,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
