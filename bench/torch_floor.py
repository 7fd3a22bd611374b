"""The floor of pure-Python hooks: what the five per-step hook points cost with almost no work.

provtel's PyTorch instrumentation enters Python five times per training step: the DataLoader
iterator's ``__next__`` (a proxy), ``torch.autograd.backward`` (a replacement), the optimizer
step pre- and post-hooks (``register_optimizer_step_pre_hook``/``post_hook``) and the loss
function (a ``torch.nn.functional`` replacement). This script installs *minimal* hooks at the
same points, each doing no more than a step record needs (two clock reads, the loss read with
``item()``, the learning rate, the batch size, one tuple appended per step), and measures them
like ``bench/torch_chunks.py``: one process, the hooks on and off for alternating chunks of 150
steps, pairs in random order, the training thread's ``thread_time``. Plain torch, no
OpenTelemetry, no spans. ``none`` is the null row (the same proxy iterator, hooks never on).

Not part of ``make bench``: it answers a design question (can pure-Python hooks at these points
meet a budget of 10 µs per step?) rather than measuring provtel. Run::

    .venv/bin/python bench/torch_floor.py hooks --epochs 61
    .venv/bin/python bench/torch_floor.py none --epochs 61
    .venv/bin/python bench/torch_floor.py hooks --points loader,post   # only some hook points
    .venv/bin/python bench/torch_floor.py inloop --epochs 6   # each operation's cost in the loop
    .venv/bin/python bench/torch_floor.py native --epochs 6   # the same beside C++ (pybind11)
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import time
from typing import Any

from medians import mean_ci

perf = time.perf_counter_ns


class State:
    """What the minimal hooks record of the open step."""

    on = False
    start = 0
    backward_ns = 0
    optimizer_ns = 0
    loss: Any = None
    lr = math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("hooks", "none", "inloop", "native"))
    parser.add_argument("--epochs", type=int, default=61, help="epochs (the first is warm-up)")
    parser.add_argument(
        "--points",
        default="loader,loss,backward,item,pre,post",
        help="which hook points are installed (comma-separated; 'item' reads the loss in backward)",
    )
    parser.add_argument(
        "--model",
        choices=("tiny", "medium"),
        default="tiny",
        help="tiny: 16→8→4, batch 8 (issue 9's); medium: 128→192→192→4, batch 64 "
        "(bench_torch's ~1.5 ms/step workload)",
    )
    args = parser.parse_args()

    import torch
    import torch.optim.optimizer as optimizer_module
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.model == "tiny":
        steps, chunk, batch_size, width = 1500, 150, 8, 16
        model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    else:
        steps, chunk, batch_size, width = 800, 80, 64, 128
        model = nn.Sequential(
            nn.Linear(128, 192), nn.ReLU(), nn.Linear(192, 192), nn.ReLU(), nn.Linear(192, 4)
        )
    n = steps * batch_size
    train = TensorDataset(torch.randn(n, width), torch.randint(0, 4, (n,)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if args.mode in ("inloop", "native"):
        inloop(args.epochs, train, model, optimizer, native() if args.mode == "native" else None)
        return
    st = State()
    rows: list[tuple[Any, ...]] = []
    backward = torch.autograd.backward
    cross_entropy = nn.functional.cross_entropy

    def hooked_backward(*a: Any, **k: Any) -> Any:
        if not st.on:
            return backward(*a, **k)
        t0 = perf()
        if read_loss:
            st.loss = a[0].item()
        try:
            return backward(*a, **k)
        finally:
            st.backward_ns += perf() - t0

    def hooked_loss(*a: Any, **k: Any) -> Any:
        result = cross_entropy(*a, **k)
        if result.requires_grad:
            return result  # training: backward reads it
        return result

    def pre(o: Any, a: Any, k: Any) -> None:
        if st.on:
            st.optimizer_ns = perf()

    def post(o: Any, a: Any, k: Any) -> None:
        if st.on:
            st.optimizer_ns = perf() - st.optimizer_ns
            st.lr = o.param_groups[0]["lr"]

    class Batches:
        __slots__ = ("it",)

        def __init__(self, it: Any) -> None:
            self.it = it

        def __iter__(self) -> Batches:
            return self

        def __next__(self) -> Any:
            if not (st.on and loader_on):
                return next(self.it)
            t0 = perf()
            batch = next(self.it)
            t1 = perf()
            rows.append(
                (st.start, t0 - st.start, t1 - t0, st.backward_ns, st.optimizer_ns, st.loss,
                 st.lr, batch[0].shape[0])
            )  # fmt: skip
            st.start, st.backward_ns = t0, 0
            return batch

    points = set(args.points.split(","))
    read_loss = "item" in points
    if args.mode == "hooks":
        if "backward" in points:
            torch.autograd.backward = hooked_backward
        if "loss" in points:
            nn.functional.cross_entropy = hooked_loss
        if "pre" in points:
            optimizer_module.register_optimizer_step_pre_hook(pre)
        if "post" in points:
            optimizer_module.register_optimizer_step_post_hook(post)
    loader_on = "loader" in points
    order = random.Random(0)
    diffs: list[float] = []
    for epoch in range(args.epochs):
        plan: list[bool] = []
        for _ in range(steps // chunk // 2):
            plan += [True, False] if order.random() < 0.5 else [False, True]
        marks = []
        batches = Batches(iter(DataLoader(train, batch_size=batch_size, shuffle=True)))
        for i, (x, y) in enumerate(batches):
            if i % chunk == 0:
                marks.append(time.thread_time())
                st.on = plan[i // chunk] and args.mode == "hooks"
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        marks.append(time.thread_time())
        st.on = False
        rows.clear()
        if epoch == 0:
            continue
        per = [(b - a) * 1e6 / chunk for a, b in itertools.pairwise(marks)]
        for k in range(0, len(plan), 2):
            on, off = (per[k], per[k + 1]) if plan[k] else (per[k + 1], per[k])
            diffs.append(on - off)
    m, lo, hi = mean_ci(diffs)
    print(
        f"{args.mode}: {len(diffs)} pairs; added per step: mean {m:+.1f} µs "
        f"(95 % CI {lo:+.1f} … {hi:+.1f}), median {statistics.median(diffs):+.1f} µs"
    )


NATIVE = r"""
#include <torch/extension.h>
#include <time.h>
double loss_value(const at::Tensor& t) {  // a CPU float scalar read in place, else item()
  if (t.device().is_cpu() && t.numel() == 1 && t.scalar_type() == at::kFloat)
    return (double)*t.const_data_ptr<float>();
  return t.item<double>();
}
int64_t batch_size(const at::Tensor& t) { return t.dim() ? t.size(0) : 1; }
int64_t clock_ns() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}
"""


def native() -> Any:
    """The same reads as a C++ extension (pybind11, what ``torch.utils.cpp_extension``
    builds; needs g++ and ninja, ~1 min to compile): what a native per-step recorder would pay
    per call from Python."""
    import tempfile

    from torch.utils.cpp_extension import load_inline

    build = tempfile.mkdtemp(prefix="provtel-floor-native-")
    return load_inline(
        "provtel_floor_native",
        cpp_sources=NATIVE,
        functions=["loss_value", "batch_size", "clock_ns"],
        extra_cflags=["-O2"],
        build_directory=build,
    )


def inloop(epochs: int, train: Any, model: Any, optimizer: Any, ext: Any = None) -> None:
    """What each operation a step record needs costs where a hook runs it: between torch's
    calls in the training loop (cold caches), not in a ``timeit`` loop. Each is timed with two
    ``perf_counter_ns`` reads around it, once right after the loss is computed (where the
    backward hook starts) and once again right after the first (warm), median over the steps."""
    import torch
    from torch.utils.data import DataLoader

    def nothing() -> None:
        pass

    ops: dict[str, Any] = {
        "clock read (perf_counter_ns)": None,
        "empty Python call": None,
        "loss.item()": None,
        "batch[0].shape[0]": None,
        "len(batch[0])": None,
        "optimizer.param_groups[0]['lr']": None,
    }
    if ext is not None:
        ops.update(dict.fromkeys(("C++ clock_ns()", "C++ loss_value(loss)", "C++ batch_size(x)")))
    cold: dict[str, list[int]] = {k: [] for k in ops}
    warm: dict[str, list[int]] = {k: [] for k in ops}
    names = list(ops)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(DataLoader(train, batch_size=8, shuffle=True)):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            name = names[i % len(names)]  # one operation per step, in turn
            for out in (cold, warm):
                if name == "clock read (perf_counter_ns)":
                    a = perf()
                elif name == "empty Python call":
                    a = perf()
                    nothing()
                elif name == "loss.item()":
                    a = perf()
                    loss.item()
                elif name == "batch[0].shape[0]":
                    a = perf()
                    _ = x.shape[0]
                elif name == "len(batch[0])":
                    a = perf()
                    len(x)
                elif name == "C++ clock_ns()":
                    a = perf()
                    ext.clock_ns()
                elif name == "C++ loss_value(loss)":
                    a = perf()
                    ext.loss_value(loss)
                elif name == "C++ batch_size(x)":
                    a = perf()
                    ext.batch_size(x)
                else:
                    a = perf()
                    _ = optimizer.param_groups[0]["lr"]
                b = perf()
                if epoch:
                    out[name].append(b - a)
            loss.backward()
            optimizer.step()
    print("| operation | in the loop, first (ns, median) | right after it (ns, median) |")
    print("|---|---:|---:|")
    for k in names:
        print(f"| {k} | {statistics.median(cold[k]):.0f} | {statistics.median(warm[k]):.0f} |")


if __name__ == "__main__":
    main()
