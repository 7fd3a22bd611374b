"""Benchmark: the cost of ``provtel.compat.yprov4ml``, beside yProv4ML 3.2.8's own.

Budget (issue 11): the compatibility layer adds <= 5 µs per ``log_metric`` call over provtel's
own ``provtel.log_metric``. Run through ``make bench`` / ``python bench/run_all.py bench_yprov``,
or alone::

    .venv/bin/python bench/bench_yprov.py [--quick] [--rounds N] [--yprov-python PATH]

It prints one Markdown section on stdout (the ``bench/run_all.py`` convention), progress on
stderr, and exits 1 when the budget fails.

Method. Every measurement runs in a fresh subprocess; the configurations take turns round by
round (the order rotated each round), and the table gives medians over the rounds. The figure
is ``time.process_time()`` (the CPU of every thread of the process: span export and hardware
sampling included), with wall time beside it.

1. **Per call**: after ``start_run`` (provtel sets OpenTelemetry up itself, with the PyTorch
   instrumentation active: torch is imported first), calls in loops with a float value and
   ``step=i``, the configurations differing only in the call made, taking turns in chunks of
   2,000 calls within one process (so drift hits them alike; medians over the chunks):
   *null* (an empty Python function of the same signature), ``provtel.log_metric(name, v,
   step, context)``, the compat ``yprov4ml.log_metric(name, v, Context.TRAINING, step)`` and
   the same with a string context; and, when a Python with the real ``yprov4ml`` 3.2.8 is
   available (``--yprov-python``, ``PROVTEL_BENCH_YPROV_PYTHON``, else
   ``/tmp/yprov-venv/bin/python``), its ``log_metric`` after its ``start_run`` (CSV, flushing
   every 100 values, its defaults) in a process of its own. The compat layer's cost is the
   median over chunks of its chunk minus the ``provtel.log_metric`` chunk of the same turn,
   then the median over processes.
2. **Per training step**: an MLP 32->64->64->1 trained with Adam on 8,192 samples in batches
   of 64 (128 steps per epoch, one torch thread), one ``log_metric("loss", ...)`` per step, as
   yProv4ML's documentation teaches. One long-lived process per configuration — plain (no
   provenance), plain again (the null row: what this machine resolves), provtel's compat layer
   (run as plain ``python``: it sets up the SDK and the PyTorch and hardware instrumentation,
   so the figure includes provtel's own recording of every step) and the real yProv4ML when
   available — after a warm-up epoch (the run's first-step work is a fixed cost), the processes
   take one epoch each in turn (order rotated) while the others wait, so a shared machine's
   drift cancels round by round. The figure is the CPU from the end of a process's previous
   epoch to the end of this one (background threads' work while it waited counts too) per
   step, compared with the plain process's epoch of the same round (median of the
   differences); wall time of the epoch beside it. Then, inside one process set up by the
   compat layer, epochs take turns between no ``log_metric``, ``provtel.log_metric`` and the
   compat ``log_metric`` in every step, which isolates the call inside real steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_US = 5.0
DEFAULT_YPROV_PYTHON = "/tmp/yprov-venv/bin/python"

_CALL_CHILD = r"""
import json, os, statistics, sys, tempfile, time
which, n, chunk, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import torch
torch.set_num_threads(1)
save = tempfile.mkdtemp(prefix="bench-yprov-")
if which == "yprov4ml":
    import yprov4ml
    yprov4ml.start_run("bench", provenance_save_dir=save)
else:
    import provtel
    import provtel.compat.yprov4ml as yprov4ml
    from provtel.compat.yprov4ml import Context
    yprov4ml.start_run("bench", provenance_save_dir=save)
    from provtel.instrumentation.torch import events
    assert events.active(), "the PyTorch instrumentation should record"

def null(key, value, context=None, step=0, source=None, timestamp=None):
    pass

def loop_null(k, i0):
    for i in range(i0, i0 + k):
        null("loss", 0.5, "training", i)

def loop_api(k, i0):
    log = provtel.log_metric
    for i in range(i0, i0 + k):
        log("loss", 0.5, i, "training")

def loop_compat(k, i0):
    log = yprov4ml.log_metric
    ctx = Context.TRAINING
    for i in range(i0, i0 + k):
        log("loss", 0.5, ctx, i)

def loop_compat_str(k, i0):
    log = yprov4ml.log_metric
    for i in range(i0, i0 + k):
        log("loss", 0.5, "training", i)

def loop_yprov(k, i0):
    log = yprov4ml.log_metric
    for i in range(i0, i0 + k):
        log("loss", 0.5, "training", i)

if which == "yprov4ml":
    loops = {"yprov4ml": loop_yprov}
else:
    loops = {"null": loop_null, "provtel.log_metric": loop_api,
             "compat (Context)": loop_compat, "compat (str)": loop_compat_str}
for loop in loops.values():
    loop(1000, 0)  # warm-up
# The modes take turns chunk by chunk in this one process, so drift hits them alike.
samples = {m: {"cpu": [], "wall": []} for m in loops}
step = 1000
for r in range(max(1, n // chunk)):
    names = list(loops)
    names = names[r % len(names):] + names[:r % len(names)]
    for name in names:
        c0, w0 = time.process_time(), time.perf_counter()
        loops[name](chunk, step)
        c1, w1 = time.process_time(), time.perf_counter()
        step += chunk
        samples[name]["cpu"].append((c1 - c0) / chunk * 1e6)
        samples[name]["wall"].append((w1 - w0) / chunk * 1e6)
result = {m: {"cpu_us": statistics.median(v["cpu"]), "wall_us": statistics.median(v["wall"])}
          for m, v in samples.items()}
if "null" in samples:  # the compat layer's cost: paired with the API chunk of the same turn
    for m in ("compat (Context)", "compat (str)"):
        result[m]["over_api_us"] = statistics.median(
            a - b for a, b in zip(samples[m]["cpu"], samples["provtel.log_metric"]["cpu"]))
with open(out, "w") as f:
    json.dump(result, f)
os._exit(0)  # the document is not the subject here
"""

_STEP_CHILD = r"""
import json, os, sys, tempfile, time
mode = sys.argv[1]
import torch
torch.set_num_threads(1)
save = tempfile.mkdtemp(prefix="bench-yprov-")
if mode == "yprov4ml":
    import yprov4ml
elif mode == "provtel compat":
    import provtel.compat.yprov4ml as yprov4ml
else:
    yprov4ml = None
if yprov4ml is not None:
    yprov4ml.start_run("bench", provenance_save_dir=save)
torch.manual_seed(0)
x = torch.randn(8192, 32)
y = x[:, :1] * 0.5 + 0.1 * torch.randn(8192, 1)
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                            torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)

def epoch(e):
    steps = 0
    for xb, yb in loader:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
        steps += 1
        if yprov4ml is not None:
            yprov4ml.log_metric("loss", loss.item(), context="training", step=e)
        else:
            loss.item()
    return steps

epoch(0)  # warm-up: the run's first-step work is a fixed cost, not a per-step one
print("ready", flush=True)
e, c_last = 1, time.process_time()
for line in sys.stdin:
    if line.strip() != "go":
        break
    w0 = time.perf_counter()
    steps = epoch(e)
    w1, c1 = time.perf_counter(), time.process_time()
    # CPU from the end of this process's previous epoch: background work done while it
    # waited for its turn (span export, sampling) counts too
    print(json.dumps({"cpu_us": (c1 - c_last) / steps * 1e6, "wall_us": (w1 - w0) / steps * 1e6,
                      "steps": steps}), flush=True)
    e, c_last = e + 1, c1
os._exit(0)
"""


def _serve(
    modes: list[str], epochs: int, yprov_python: str | None
) -> dict[str, list[dict[str, float]]]:
    """Long-lived processes, one per mode, taking one epoch each in turn (order rotated)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    env.update(OTEL_PYTHON_PROVTEL_SUMMARY="false", OMP_NUM_THREADS="1")
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-yprov-") as tmp:
        procs = {
            m: subprocess.Popen(
                [_python_for(m, yprov_python), "-c", _STEP_CHILD, m],
                cwd=tmp,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for m in modes
        }
        try:
            for m, proc in procs.items():
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"{m} did not start")
            for r in range(epochs):
                for m in modes[r % len(modes) :] + modes[: r % len(modes)]:
                    proc = procs[m]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    results[m].append(json.loads(proc.stdout.readline()))
                print(
                    f"[bench_yprov] epoch {r + 1}/{epochs}: "
                    + ", ".join(f"{m} {results[m][-1]['cpu_us']:.0f}" for m in modes),
                    file=sys.stderr,
                )
        finally:
            for proc in procs.values():
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=60)
    return results


_AB_CHILD = r"""
import json, os, statistics, sys, tempfile, time
epochs, out = int(sys.argv[2]), sys.argv[3]
import torch
torch.set_num_threads(1)
import provtel
import provtel.compat.yprov4ml as yprov4ml
yprov4ml.start_run("bench", provenance_save_dir=tempfile.mkdtemp(prefix="bench-yprov-"))
torch.manual_seed(0)
x = torch.randn(8192, 32)
y = x[:, :1] * 0.5 + 0.1 * torch.randn(8192, 1)
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                            torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
modes = ["no log_metric", "provtel.log_metric", "compat log_metric"]
cpu = {m: [] for m in modes}
for e in range(1 + epochs * len(modes)):
    m = modes[(e - 1) % len(modes)] if e else modes[2]
    c0, n = time.process_time(), 0
    for xb, yb in loader:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
        n += 1
        v = loss.item()
        if m == "compat log_metric":
            yprov4ml.log_metric("loss", v, context="training", step=e)
        elif m == "provtel.log_metric":
            provtel.log_metric("loss", v, step=e, context="training")
    if e:  # epoch 0 is a warm-up
        cpu[m].append((time.process_time() - c0) / n * 1e6)
with open(out, "w") as f:
    json.dump({m: statistics.median(v) for m, v in cpu.items()}, f)
os._exit(0)
"""


def _python_for(mode: str, yprov_python: str | None) -> str:
    return yprov_python if mode == "yprov4ml" and yprov_python else sys.executable


def _child(code: str, mode: str, args: list[str], yprov_python: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    env.update(OTEL_PYTHON_PROVTEL_SUMMARY="false", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="bench-yprov-") as tmp:
        out = Path(tmp) / "result.json"
        result = subprocess.run(
            [_python_for(mode, yprov_python), "-c", code, mode, *args, str(out)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"{mode} failed:\n{result.stderr[-2000:]}")
        data: dict[str, float] = json.loads(out.read_text())
        return data


def _yprov_python(option: str | None) -> str | None:
    candidate = option or os.environ.get("PROVTEL_BENCH_YPROV_PYTHON") or DEFAULT_YPROV_PYTHON
    if not Path(candidate).exists():
        return None
    check = subprocess.run(
        [candidate, "-c", "import yprov4ml, importlib.metadata as m; print(m.version('yprov4ml'))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check.returncode != 0:
        print(f"[bench_yprov] {candidate} cannot import yprov4ml: skipped", file=sys.stderr)
        return None
    print(f"[bench_yprov] yprov4ml {check.stdout.strip()} at {candidate}", file=sys.stderr)
    return candidate


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None, help="calls per process (100000)")
    parser.add_argument("--yprov-python", help="a Python that imports yprov4ml 3.2.8")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    epochs = 6 if args.quick else 16
    calls = args.calls or (40_000 if args.quick else 200_000)
    chunk = 2_000
    yprov_python = _yprov_python(args.yprov_python)

    call_modes = ["null", "provtel.log_metric", "compat (Context)", "compat (str)"]
    per_call: dict[str, list[dict[str, float]]] = {m: [] for m in call_modes}
    processes = ["provtel"] + (["yprov4ml"] if yprov_python else [])
    if yprov_python:
        call_modes.append("yprov4ml")
        per_call["yprov4ml"] = []
    for r in range(rounds):
        for which in processes[r % len(processes) :] + processes[: r % len(processes)]:
            mode = "yprov4ml" if which == "yprov4ml" else "provtel"
            result = _child(_CALL_CHILD, mode, [str(calls), str(chunk)], yprov_python)
            for name, row in result.items():
                per_call[name].append(row)
            print(
                f"[bench_yprov] round {r + 1}/{rounds} per call {which}: {result}", file=sys.stderr
            )
    step_modes = ["plain", "plain (null)", "provtel compat"] + (
        ["yprov4ml"] if yprov_python else []
    )
    per_step = _serve(step_modes, epochs, yprov_python)
    in_process = [_child(_AB_CHILD, "ab", [str(epochs)], None) for _ in range(rounds)]
    print(f"[bench_yprov] in one process: {in_process}", file=sys.stderr)

    api = _median(per_call["provtel.log_metric"], "cpu_us")
    added = {
        m: statistics.median(row["over_api_us"] for row in per_call[m])
        for m in ("compat (Context)", "compat (str)")
    }
    worst = max(added.values())
    ok = worst <= BUDGET_US

    lines = [
        "## yProv4ML compatibility layer (`provtel.compat.yprov4ml`)",
        "",
        "What `import provtel.compat.yprov4ml as yprov4ml` costs a script written for yProv4ML, "
        "beside the real yProv4ML 3.2.8"
        + ("" if yprov_python else " (not measured: no Python with `yprov4ml` was found)")
        + ". Every configuration runs in a fresh process, in turns (order rotated each round), "
        f"{rounds} rounds; medians. CPU = `time.process_time()` (all threads of the process), "
        "wall beside it. Method in the docstring of `bench/bench_yprov.py`.",
        "",
        f"### Per `log_metric` call ({calls:,} calls of each kind per process, after `start_run`)",
        "",
        "| call | CPU µs/call | wall µs/call | over `provtel.log_metric` (CPU) |",
        "|---|---:|---:|---:|",
    ]
    for mode in call_modes:
        cpu, wall = _median(per_call[mode], "cpu_us"), _median(per_call[mode], "wall_us")
        over = (
            f"{added[mode]:+.2f}"
            if mode in added
            else ("0" if mode == "provtel.log_metric" else "")
        )
        label = {
            "null": "null: an empty function, same arguments",
            "provtel.log_metric": "`provtel.log_metric(name, v, step, context)`",
            "compat (Context)": "`yprov4ml.log_metric(name, v, Context.TRAINING, step)` (compat)",
            "compat (str)": '`yprov4ml.log_metric(name, v, "training", step)` (compat)',
            "yprov4ml": "yProv4ML 3.2.8 `log_metric` (CSV, flush every 100)",
        }[mode]
        lines.append(f"| {label} | {cpu:.2f} | {wall:.2f} | {over} |")
    lines += [
        "",
        f"**{'PASS' if ok else 'FAIL'}**: the compatibility layer adds {worst:.2f} µs of CPU "
        f"per `log_metric` call over provtel's own API (budget <= {BUDGET_US:.0f} µs; "
        f"`provtel.log_metric` itself: {api:.2f} µs, under the PyTorch instrumentation).",
        "",
        f"### Per training step ({epochs} epochs of 128 steps per process after a warm-up epoch, "
        "MLP 32-64-64-1, Adam, batch 64, one `log_metric` per step)",
        "",
        "| configuration | CPU µs/step | wall µs/step | added CPU µs/step over plain |",
        "|---|---:|---:|---:|",
    ]
    for mode in step_modes:
        cpu, wall = _median(per_step[mode], "cpu_us"), _median(per_step[mode], "wall_us")
        if mode == "plain":
            extra = "0"
        else:
            pairs = zip(per_step[mode], per_step["plain"], strict=True)
            extra = f"{statistics.median(r['cpu_us'] - p['cpu_us'] for r, p in pairs):+.1f}"
        label = {
            "plain": "plain `python`, no provenance",
            "plain (null)": "null: plain `python` again (what this machine resolves)",
            "provtel compat": "provtel compat layer (SDK, PyTorch and hardware instrumentation)",
            "yprov4ml": "yProv4ML 3.2.8",
        }[mode]
        lines.append(f"| {label} | {cpu:.1f} | {wall:.1f} | {extra} |")
    lines += [
        "",
        "The provtel row includes provtel's own recording of every step (durations, data wait, "
        "backward and optimizer times, loss, learning rate, batch size) and its background "
        "threads; yProv4ML records only the logged value. Start-up and exit are not in these "
        "figures (yProv4ML's `start_run` sleeps 1 s; see `reference/yprov4ml.md` §5). Separate "
        "processes differ by more than the null row on this shared machine; the PyTorch "
        "instrumentation's own per-step cost is measured with more care in the section "
        '"PyTorch instrumentation overhead".',
        "",
        "Inside one process set up by the compat layer, epochs taking turns between no "
        f"`log_metric`, `provtel.log_metric` and the compat `log_metric` in every step "
        f"({epochs} epochs each, {rounds} processes; median of the per-process medians):",
        "",
        "| in every step | CPU µs/step | over no `log_metric` |",
        "|---|---:|---:|",
    ]
    base = statistics.median(r["no log_metric"] for r in in_process)
    for mode in ("no log_metric", "provtel.log_metric", "compat log_metric"):
        value = statistics.median(r[mode] for r in in_process)
        lines.append(f"| {mode} | {value:.1f} | {value - base:+.1f} |")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
