"""Benchmark: what provtel costs a PyTorch training script, as the user pays it.

Budgets (DESIGN.md "Budgets"): added cost per training step, default settings, CPU reference
workload <= 10 µs of CPU per step (all threads of the process, block export and sampling
included) and <= 1 % at 1-2 ms per step; whole-process fixed cost (start + exit) of a 20-step
script <= 0.3 s over plain Python; start-up added by ``provtel_torch`` beyond
``opentelemetry-instrument`` itself <= 150 ms; finalising the document at exit after 10k steps
<= 0.3 s. Run through ``make bench`` / ``python bench/run_all.py bench_torch``, or alone::

    .venv/bin/python bench/bench_torch.py [--quick] [--rounds N] [--only steps|fixed|exit]

It prints one Markdown section on stdout (the ``bench/run_all.py`` convention), progress on
stderr, and exits 1 when a budget fails.

Method:

1. **Per step**: ``bench/torch_workload.py --serve`` (an MLP trained with SGD over a shuffled
   ``DataLoader``; each epoch ends with a validation pass and a checkpoint; one torch thread)
   runs as one long-lived process per configuration (``opentelemetry-instrument python`` for
   each instrumented configuration; plain ``python`` for the null row, which shows what this
   shared machine resolves), each with a plain ``python`` twin. A process and its twin take
   an epoch *at the same time* (a pair: both meet the same load from the rest of the machine,
   which on this shared VM swings the CPU time of a step by tens of percent within seconds);
   the pairs follow one another, in an order rotated every round, while the other processes
   wait on their pipe, so every process has the same duty cycle (one epoch a round). Each
   process stays in the steady state of a long run: step blocks, the ``BatchSpanProcessor``
   exporting them, the metric reader collecting every 10 s. The figure is
   ``time.process_time()`` (the CPU of *all* threads of the process: span export, metric
   collection and hardware sampling included) from the end of a process's previous epoch to
   the end of this one, so that export work done while it waited counts too, divided by the
   epoch's training steps, minus its twin's; the tables give the median and interquartile
   range over rounds. Work driven by the clock (the metric reader, the hardware sampler) is
   counted only during the epoch, since a real run does not wait between epochs. Wall time of
   the epoch is beside it. Each thread's CPU time (``/proc/self/task/*/schedstat``) gives the
   per-thread table, and splits each paired difference into the main thread's (the hooks and
   the block close; the noisy part: the machine's load lands there) and all other threads'
   (export, idle hand-over, metric reader, sampler: absolute work of the instrumented process,
   small spread). The verdict uses a distribution-free 95 % confidence interval of the median
   (binomial order statistics): PASS when all of it is within budget, FAIL when all of it is
   above, NOT RESOLVED otherwise (more rounds resolve more). The first epoch of every process
   is a warm-up (the run's first-step work
   is part of the fixed cost below). Two workloads: the tiny model of issue 9 (hidden width 8,
   batch 8, 1,500 steps per epoch) and a ~1.5 ms/step model for the 1 % budget.
2. **Fixed cost**: a 20-step script (tiny MLP, ``DataLoader``) launched as plain ``python``,
   under ``opentelemetry-instrument`` with the defaults, with ``provtel_torch`` disabled, and
   with everything of provtel's off (the floor: upstream's share); each beside a plain twin;
   launch to exit (wall) and the child's CPU time (``os.wait4`` rusage), and launch to the end
   of the first step (start-up): wall, and the process's CPU then (``getrusage`` in the
   script; it counts the launcher too, whose CPU survives its ``exec``). The start-up verdict
   uses the CPU: on this shared machine the wall time of a start swings by seconds.
3. **Exit**: a script takes 10,000 DataLoader steps under ``opentelemetry-instrument`` and
   prints the time after its last step; the time from then to the PROV document written (the
   newest file of the run folder) and to the process's exit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medians import median_ci

BUDGET_STEP_US = 10.0
BUDGET_STEP_PERCENT = 1.0
BUDGET_FIXED_S = 0.3
BUDGET_STARTUP_MS = 150.0
BUDGET_EXIT_S = 0.3
EXIT_STEPS = 10_000

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "torch_workload.py"
BIN = Path(sys.executable).parent
INSTRUMENT = BIN / "opentelemetry-instrument"
HARDWARE = "provtel_host,provtel_nvml,provtel_rapl,provtel_amdsmi"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: ``--pythonpath``: source folders put before the installed packages (to measure another
#: checkout, e.g. ``git worktree add /tmp/old <commit>``), else none.
PYTHONPATH: str | None = None


def user_env(output: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user who set nothing but where the documents go."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    # An installed package has its bytecode compiled; without it every start compiles provtel.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if PYTHONPATH:
        env["PYTHONPATH"] = PYTHONPATH
    env["OTEL_PYTHON_PROVTEL_OUTPUT_DIR"] = str(output)
    env.update(extra or {})
    return env


# -- 1. per step ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One way of running the workload."""

    name: str
    instrumented: bool
    env: dict[str, str] = field(default_factory=dict)


PLAIN = Config("plain `python`", False)
NULL = Config("plain `python` again (null row)", False)
DEFAULTS = Config("defaults (everything on)", True)
CONFIGS_TINY = [
    PLAIN,
    NULL,
    DEFAULTS,
    Config(
        "hardware instrumentors disabled",
        True,
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": HARDWARE},
    ),
    Config(
        "long step blocks (30 s / 100k steps)",
        True,
        {
            "OTEL_PYTHON_PROVTEL_TORCH_BLOCK_SECONDS": "30",
            "OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS": "100000",
        },
    ),
    Config(
        "`provtel_torch` disabled (distro, exporters, hardware)",
        True,
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "provtel_torch"},
    ),
]
CONFIGS_2MS = [PLAIN, NULL, DEFAULTS]


@dataclass(frozen=True)
class Workload:
    """Arguments of ``torch_workload.py``."""

    name: str
    args: tuple[str, ...]
    configs: list[Config]


def _args(text: str) -> tuple[str, ...]:
    return tuple(text.split())


TINY = Workload(
    "tiny MLP (issue 9): 16→8→4, batch 8; epochs of 1,500 steps + 150 validation batches "
    "+ a checkpoint",
    _args("--input 16 --hidden 8 --depth 1 --batch 8 --steps 1500 --val-steps 150"),
    CONFIGS_TINY,
)
MEDIUM = Workload(
    "~1.5 ms/step MLP: 128→192→192→4, batch 64; epochs of 800 steps + 80 validation batches "
    "+ a checkpoint",
    _args("--input 128 --hidden 192 --depth 2 --batch 64 --steps 800 --val-steps 80"),
    CONFIGS_2MS,
)


class Server:
    """One ``torch_workload.py --serve`` process: it takes one epoch whenever asked."""

    def __init__(self, w: Workload, c: Config, output: Path) -> None:
        self.config, self.output = c, output
        command = [sys.executable, str(WORKLOAD), *w.args, "--serve"]
        if c.instrumented:
            command = [str(INSTRUMENT), *command]
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            command,
            env=user_env(output, c.env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )

    def _fail(self, what: str) -> RuntimeError:
        self.stderr.seek(0)
        return RuntimeError(f"{self.config.name}: {what}\n{self.stderr.read()[-3000:]}")

    def ready(self) -> None:
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise self._fail("the training process did not start")

    def epoch(self) -> dict[str, Any]:
        self.send()
        return self.receive()

    def send(self) -> None:
        """Start an epoch."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        """The report of the epoch started last."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise self._fail("the training process ended")
        report: dict[str, Any] = json.loads(line)
        return report

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        code = self.process.wait(timeout=300)
        if code != 0:
            raise self._fail(f"exited with {code}")
        if records_run(self.config) and not list(self.output.glob("*/prov.json")):
            raise self._fail(f"no PROV document under {self.output}")
        self.stderr.close()


def records_run(c: Config) -> bool:
    """Whether the configuration records a training run (writes a PROV document)."""
    disabled = {
        n.strip() for n in c.env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
    }
    return c.instrumented and not disabled & {"provtel_torch", "*"}


@dataclass
class Cycle:
    """One epoch of one process and the wait before it."""

    cpu_s: float  # process CPU (all threads) from the end of its previous epoch to this one's end
    wall_s: float  # the epoch's wall time
    steps: int
    threads: dict[str, float]  # CPU seconds by thread over the same interval


@dataclass
class Row:
    config: Config
    cycles: list[Cycle]
    cpu_added_us: list[float]  # per round, vs that round's plain cycle, per step
    wall_added_us: list[float]
    main_added_us: list[float] = field(default_factory=list)  # main thread, vs the twin's
    others_added_us: list[float] = field(default_factory=list)  # every other thread, vs twin's


#: Threads whose work is driven by the clock, not by steps: the SDK's metric reader (every
#: ``OTEL_METRIC_EXPORT_INTERVAL``), the hardware sampler and the torch instrumentation's idle
#: block hand-over (it polls). A real run trains without pause, so only what they do *during* an
#: epoch is counted; what they do while the process waits for its turn would not exist there.
CLOCK_THREADS = (
    "OtelPeriodicExportingMetricReader",
    "provtel-hardware-sampler",
    "provtel-idle-blocks",
)


def _cycles(reports: list[dict[str, Any]]) -> list[Cycle]:
    out = []
    for before, after in itertools.pairwise(reports):
        threads = {k: v - before["threads"].get(k, 0.0) for k, v in after["threads"].items()}
        cpu = after["cpu1"] - before["cpu1"]
        for name in CLOCK_THREADS:
            if name in threads:
                during = after["threads"][name] - after["threads0"].get(name, 0.0)
                cpu -= threads[name] - during
                threads[name] = during
        out.append(Cycle(cpu, after["wall_s"], after["train_steps"], threads))
    return out


def measure_workload(w: Workload, rounds: int, directory: Path) -> dict[str, Row]:
    """Each configuration's process and a plain twin take ``rounds`` epochs, both at the same
    time (a pair), after a warm-up epoch; the pairs go in turn."""
    pairs = [
        (Server(w, PLAIN, directory / f"plain{i}"), Server(w, c, directory / f"run{i}"))
        for i, c in enumerate(w.configs)
        if c is not PLAIN
    ]
    last: dict[int, dict[str, Any]] = {}
    rows = {c.name: Row(c, [], [], []) for c in w.configs}
    servers = [s for pair in pairs for s in pair]
    try:
        for s in servers:
            s.ready()
        for s in servers:  # warm-up: the run's first-step work belongs to the fixed cost
            last[id(s)] = s.epoch()
        for r in range(rounds):
            shift = r % len(pairs)
            for twin, s in pairs[shift:] + pairs[:shift]:
                twin.send()
                s.send()
                got = {id(twin): twin.receive(), id(s): s.receive()}
                p, x = (_cycles([last[k], got[k]])[0] for k in (id(twin), id(s)))
                last.update(got)
                rows[PLAIN.name].cycles.append(p)
                row = rows[s.config.name]
                row.cycles.append(x)
                row.cpu_added_us.append(1e6 * (x.cpu_s - p.cpu_s) / p.steps)
                row.wall_added_us.append(1e6 * (x.wall_s - p.wall_s) / p.steps)
                main_x, main_p = x.threads.get("MainThread", 0.0), p.threads.get("MainThread", 0.0)
                row.main_added_us.append(1e6 * (main_x - main_p) / p.steps)
                row.others_added_us.append(
                    1e6 * ((x.cpu_s - main_x) - (p.cpu_s - main_p)) / p.steps
                )
            log(
                f"  round {r + 1}/{rounds}: plain "
                f"{1e6 * rows[PLAIN.name].cycles[-1].cpu_s / w_steps(rows):.0f} µs/step; "
                + ", ".join(
                    f"{n.split(' (')[0]} {row.cpu_added_us[-1]:+.0f}"
                    for n, row in rows.items()
                    if n != PLAIN.name
                )
            )
    finally:
        for s in servers:
            if s.process.poll() is None and s.process.stdin is not None:
                s.process.stdin.write("stop\n")
                s.process.stdin.close()
        for s in servers:
            s.close()
    return rows


def verdict_word(ci: tuple[float, float], budget: float) -> str:
    """PASS when the whole interval is within budget, FAIL when all of it is above, else the
    machine did not resolve the question at this many rounds."""
    if ci[1] <= budget:
        return "PASS"
    if ci[0] > budget:
        return "FAIL"
    return "NOT RESOLVED"


CHUNKS = HERE / "torch_chunks.py"
#: ``opentelemetry-instrument`` and the SDK with everything of provtel's off: upstream's floor
FLOOR_ENV = {
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
    "OTEL_PYTHON_ID_GENERATOR": "random",
}


def measure_chunks(w: Workload, pairs: int, directory: Path) -> dict[str, Any]:
    """``bench/torch_chunks.py`` under ``opentelemetry-instrument`` (defaults): the per-step
    cost resolved inside one process, by alternating chunks of steps with the tracker on/off."""
    out = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(CHUNKS), *w.args, "--pairs", str(pairs)],
        env=user_env(directory / "chunks", {}),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"torch_chunks.py failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    ours = sum(
        us
        for name, us in result["threads_us_per_on_step"].items()
        if name.startswith(("Otel", "provtel"))
    )
    entry = sum(result["entry_ns"].values()) / 1e3
    main, lo, hi = result["main_thread_us"]
    result["others_abs_us"] = ours
    result["entry_us"] = entry
    result["estimate_us"] = [main + ours + entry, lo + ours + entry, hi + ours + entry]
    return result


def chunks_lines(w: Workload, r: dict[str, Any]) -> list[str]:
    """The table of one workload's chunk measurement."""
    m, lo, hi = r["main_thread_us"]
    a, alo, ahi = r["all_threads_us"]
    e, elo, ehi = r["estimate_us"]
    threads = ", ".join(
        f"{name} {us:.1f}"
        for name, us in sorted(r["threads_us_per_on_step"].items())
        if name.startswith(("Otel", "provtel"))
    )
    entry = ", ".join(f"{name} {ns:.0f} ns" for name, ns in r["entry_ns"].items())
    return [
        f"**{w.name}**: {r['pairs']} pairs of {r['chunk']}-step chunks; plain step "
        f"{r['plain_us']:,.0f} µs CPU (median of the off chunks).",
        "",
        "| part | µs per step (mean) | 95 % CI |",
        "|---|---:|---:|",
        f"| training thread, paired (hooks, block close) | {m:+.1f} | {lo:+.1f} … {hi:+.1f} |",
        f"| all threads, paired (`process_time`) | {a:+.1f} | {alo:+.1f} … {ahi:+.1f} |",
        f"| instrumentation threads, absolute (schedstat per instrumented step: {threads}) "
        f"| +{r['others_abs_us']:.1f} | |",
        f"| hooks entered while switched off (timeit: {entry}) | +{r['entry_us']:.1f} | |",
        f"| **estimate: training thread + instrumentation threads + entry** | **{e:+.1f}** "
        f"| {elo:+.1f} … {ehi:+.1f} |",
    ]


def w_steps(rows: dict[str, Row]) -> int:
    return rows[PLAIN.name].cycles[-1].steps


def per_step_table(w: Workload, rows: dict[str, Row]) -> list[str]:
    plain = rows[PLAIN.name]
    rounds = len(rows[w.configs[-1].name].cycles)
    plain_cpu = statistics.median(1e6 * c.cpu_s / c.steps for c in plain.cycles)
    plain_wall = statistics.median(1e6 * c.wall_s / c.steps for c in plain.cycles)
    lines = [
        f"**{w.name}**; {rounds} rounds; plain: {plain_cpu:,.0f} µs CPU, "
        f"{plain_wall:,.0f} µs wall per training step (median).",
        "",
        "| configuration | CPU added per step (median) | interquartile range | % of the plain "
        "step | wall added per step (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        if row.config is PLAIN:
            continue
        cpu = statistics.median(row.cpu_added_us)
        wall = statistics.median(row.wall_added_us)
        q = statistics.quantiles(row.cpu_added_us, n=4) if len(row.cpu_added_us) > 1 else [cpu] * 3
        lines.append(
            f"| {name} | {cpu:+.1f} µs | {q[0]:+.1f} … {q[2]:+.1f} µs | "
            f"{100 * cpu / plain_cpu:+.2f} % | {wall:+.1f} µs |"
        )
    return lines


def thread_table(rows: dict[str, Row], names: list[str]) -> list[str]:
    """CPU per training step by thread, median over rounds, for the given configurations."""

    def per_thread(row: Row) -> dict[str, float]:
        keys = sorted({k for c in row.cycles for k in c.threads})
        out = {
            k: statistics.median(1e6 * c.threads.get(k, 0.0) / c.steps for c in row.cycles)
            for k in keys
        }
        out["(threads that ended)"] = statistics.median(
            1e6 * (c.cpu_s - sum(c.threads.values())) / c.steps for c in row.cycles
        )
        return out

    plain = per_thread(rows[PLAIN.name])
    tables = {n: per_thread(rows[n]) for n in names}
    keys = list(dict.fromkeys([*plain, *(k for t in tables.values() for k in t)]))
    keys = [k for k in keys if any(abs(t.get(k, 0.0)) >= 0.05 for t in [plain, *tables.values()])]
    lines = [
        "| thread | plain µs/step | " + " | ".join(f"{n} µs/step" for n in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for k in keys:
        lines.append(
            f"| {k} | {plain.get(k, 0.0):.1f} | "
            + " | ".join(f"{tables[n].get(k, 0.0):.1f}" for n in names)
            + " |"
        )
    return lines


def costs_table(steps_per_s: float) -> list[str]:
    """The pieces one at a time (``bench/torch_costs.py`` in a fresh process)."""
    result = subprocess.run(
        [sys.executable, str(HERE / "torch_costs.py")],
        env=user_env(Path(tempfile.gettempdir())),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"torch_costs.py failed:\n{result.stderr[-3000:]}")
    c = json.loads(result.stdout.strip().splitlines()[-1])
    block = 1000
    interval_s = 10.0
    return [
        "The pieces one at a time (`bench/torch_costs.py`: median `thread_time` of repeated",
        "calls through public APIs; per step at this machine's tiny-model rate of "
        f"{steps_per_s:,.0f} steps/s, blocks of {block:,} steps, the distro's 10 s metric "
        "interval):",
        "",
        "| piece | measured | per training step |",
        "|---|---:|---:|",
        "| SDK checks of a step block's attributes (10 arrays × 1,000 values, element by "
        f"element) | {c['block_span_ms']:.2f} ms a block | "
        f"{c['block_span_ms'] * 1e3 / block:.2f} µs |",
        "| PROV span exporter, one step block (records, journal, series files) | "
        f"{c['block_export_ms']:.2f} ms a block | {c['block_export_ms'] * 1e3 / block:.2f} µs |",
        "| one SDK `Histogram.record` (a metric recorded per step) | "
        f"{c['sdk_record_us']:.2f} µs a call | {c['sdk_record_us']:.2f} µs per metric |",
        "| one metric collection + PROV export (host instrumentor) | "
        f"{c['collection_ms']:.2f} ms | "
        f"{c['collection_ms'] * 1e3 / (interval_s * steps_per_s):.3f} µs |",
        "",
        "The main thread's share above is the hooks' work and the block close (the SDK",
        "checks of the block span run there). Which functions: the py-spy profile in",
        "[performance.md](performance.md) (`bench/profile_torch.py`).",
    ]


# -- 2. fixed cost and 3. exit: subprocesses -----------------------------------------------------

SCRIPT_20 = """
import resource
import time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
data = TensorDataset(torch.randn(160, 16), torch.randint(0, 4, (160,)))
model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
first = None
for x, y in DataLoader(data, batch_size=8):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    if first is None:
        first = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        first_cpu = usage.ru_utime + usage.ru_stime
print(first, first_cpu, flush=True)
"""

SCRIPT_EMPTY = """
import time
print(time.time(), flush=True)
"""

SCRIPT_EXIT = f"""
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


@dataclass
class Process:
    printed_after_s: float  # launch to the time the script printed
    exit_after_s: float  # the printed time to the process's exit
    total_s: float  # launch to exit
    cpu_s: float  # user + system CPU of the process
    written_after_s: float | None  # the printed time to the run folder's newest file
    cpu_first_s: float | None = None  # CPU of the process when the first step was done


def timed_processes(
    script: Path, runs: list[tuple[Config, Path]], document: bool = True
) -> list[Process]:
    """Launch the processes at the same time; time each from its launch to its exit."""
    results: list[Process | BaseException | None] = [None] * len(runs)

    def one(i: int, c: Config, output: Path) -> None:
        try:
            results[i] = timed_process(script, c, output, document)
        except BaseException as exc:  # reported by the caller
            results[i] = exc

    threads = [
        threading.Thread(target=one, args=(i, c, output)) for i, (c, output) in enumerate(runs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = []
    for r in results:
        if not isinstance(r, Process):
            raise RuntimeError(f"{script.name}: {r}")
        out.append(r)
    return out


def timed_process(script: Path, c: Config, output: Path, document: bool = True) -> Process:
    command = [sys.executable, str(script)]
    if c.instrumented:
        command = [str(INSTRUMENT), *command]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.time()
        proc = subprocess.Popen(
            command, env=user_env(output, c.env), cwd=script.parent, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        end = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{script.name} ({c.name}) failed:\n{err.read()[-3000:]}")
        printed, *more = (float(v) for v in out.read().strip().splitlines()[-1].split())
    written = None
    if document and records_run(c):
        documents = list(output.glob("*/prov.json"))
        if len(documents) != 1:
            raise RuntimeError(f"{script.name} ({c.name}): {len(documents)} documents")
        written = max(f.stat().st_mtime for f in documents[0].parent.rglob("*")) - printed
    return Process(
        printed - start,
        end - printed,
        end - start,
        usage.ru_utime + usage.ru_stime,
        written,
        more[0] if more else None,
    )


def measure_processes(
    script: Path, configs: list[Config], reps: int, directory: Path, document: bool = True
) -> tuple[dict[str, list[Process]], dict[str, list[Process]]]:
    """Each configuration launched at the same time as a plain twin, ``reps`` times; the pairs
    in turn, order rotated. Returns the runs and, by configuration, the twins."""
    out: dict[str, list[Process]] = {c.name: [] for c in configs}
    twins: dict[str, list[Process]] = {c.name: [] for c in configs}
    others = [c for c in configs if c is not PLAIN]
    for rep in range(reps):
        shift = rep % len(others)
        for c in others[shift:] + others[:shift]:
            with (
                tempfile.TemporaryDirectory(dir=directory) as a,
                tempfile.TemporaryDirectory(dir=directory) as b,
            ):
                twin, run = timed_processes(script, [(PLAIN, Path(a)), (c, Path(b))], document)
            out[PLAIN.name].append(twin)
            twins[c.name].append(twin)
            out[c.name].append(run)
        log(
            f"  {script.stem} {rep + 1}/{reps}: "
            + ", ".join(
                f"{c.name.split(' (')[0]} {out[c.name][-1].cpu_s - twins[c.name][-1].cpu_s:+.3f} s"
                for c in others
            )
            + " CPU"
        )
    return out, twins


def paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x - y for x, y in zip(a, b, strict=True))


# -- report --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="epochs per configuration")
    parser.add_argument("--fixed-reps", type=int, default=None, help="runs of the 20-step script")
    parser.add_argument(
        "--only", choices=("steps", "fixed", "exit"), action="append", help="parts to run"
    )
    parser.add_argument(
        "--pythonpath",
        help="PYTHONPATH for the measured processes, e.g. the src folders of another checkout",
    )
    args = parser.parse_args()
    global PYTHONPATH
    PYTHONPATH = args.pythonpath
    rounds = args.rounds or (2 if args.quick else 6)
    fixed_reps = args.fixed_reps or (3 if args.quick else 6)
    exit_reps = 1 if args.quick else 3
    parts = set(args.only or ("steps", "fixed", "exit"))
    load = os.getloadavg()

    lines = [
        "## PyTorch instrumentation: what a training script pays",
        "",
        "Per step: `bench/torch_workload.py --serve` (an MLP trained with SGD over a shuffled",
        "`DataLoader`; each epoch ends with a validation pass and a checkpoint; one torch thread)",
        "runs as one long-lived process per configuration (`opentelemetry-instrument python`;",
        "plain `python` for the null row: what this shared machine resolves), each with a plain",
        "`python` twin that takes an epoch at the same time (a pair meets the same load from the",
        "rest of the machine); pairs in turn, order rotated every round. The figure is",
        "`time.process_time()` (the CPU of **every thread** of the process: span export, metric",
        "collection and hardware sampling included) from the end of a process's previous epoch to",
        "the end of this one, per training step, minus its twin's in the same pair",
        "(median and interquartile range over rounds); the epoch's wall time beside it. Work",
        "driven by the clock (metric reader, hardware sampler) counts only during the epoch.",
        "A first warm-up epoch per process is not counted. Method details in the docstring of",
        "`bench/bench_torch.py`.",
        "",
        f"Load average at the start: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
        f"({os.cpu_count()} cores, shared with other jobs).",
    ]
    ok = True
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if "steps" in parts:
            log("per step: tiny model")
            tiny = measure_workload(TINY, rounds, directory)
            log("per step: ~1.5 ms model")
            medium = measure_workload(MEDIUM, rounds, directory)
            lines += ["", "### Per training step", ""]
            lines += per_step_table(TINY, tiny)
            lines += [""]
            lines += per_step_table(MEDIUM, medium)
            lines += ["", "### Where the CPU goes", ""]
            lines += [
                "By thread (tiny model, defaults; median over rounds of each thread's CPU per",
                "training step, `/proc/self/task/*/schedstat`):",
                "",
            ]
            lines += thread_table(tiny, [DEFAULTS.name])
            plain_us = statistics.median(1e6 * c.cpu_s / c.steps for c in tiny[PLAIN.name].cycles)
            lines += ["", *costs_table(1e6 / plain_us)]
            d = tiny[DEFAULTS.name]
            d_us = statistics.median(d.cpu_added_us)
            d_ci = median_ci(d.cpu_added_us)
            null_us = statistics.median(tiny[NULL.name].cpu_added_us)
            null_ci = median_ci(tiny[NULL.name].cpu_added_us)
            main_us = statistics.median(d.main_added_us)
            main_ci = median_ci(d.main_added_us)
            others_us = statistics.median(d.others_added_us)
            others_ci = median_ci(d.others_added_us)
            m_plain = statistics.median(1e6 * c.cpu_s / c.steps for c in medium[PLAIN.name].cycles)
            m_us = statistics.median(medium[DEFAULTS.name].cpu_added_us)
            m_ci = median_ci(medium[DEFAULTS.name].cpu_added_us)
            m_pct = 100 * m_us / m_plain
            m_null = 100 * statistics.median(medium[NULL.name].cpu_added_us) / m_plain
            word_us = verdict_word(d_ci, BUDGET_STEP_US)
            word_pct = verdict_word(
                (100 * m_ci[0] / m_plain, 100 * m_ci[1] / m_plain), BUDGET_STEP_PERCENT
            )
            words = {word_us, word_pct}
            word = "FAIL" if "FAIL" in words else "NOT RESOLVED" if len(words) > 1 else word_us
            log("per step: inside one process, alternating chunks")
            pairs = 60 if rounds <= 2 else 300
            ch_tiny = measure_chunks(TINY, pairs, directory)
            ch_medium = measure_chunks(MEDIUM, pairs, directory)
            e_tiny = ch_tiny["estimate_us"]
            e_med = [100 * v / ch_medium["plain_us"] for v in ch_medium["estimate_us"]]
            c_words = {
                verdict_word((e_tiny[1], e_tiny[2]), BUDGET_STEP_US),
                verdict_word((e_med[1], e_med[2]), BUDGET_STEP_PERCENT),
            }
            c_word = (
                "FAIL"
                if "FAIL" in c_words
                else "NOT RESOLVED"
                if len(c_words) > 1
                else c_words.pop()
            )
            ok &= c_word == "PASS"
            lines += [
                "",
                "How well this run resolves it (95 % confidence intervals of the medians, "
                "distribution-free, over the rounds): defaults "
                f"{d_us:+.1f} µs [{d_ci[0]:+.1f} … {d_ci[1]:+.1f}], null row {null_us:+.1f} µs "
                f"[{null_ci[0]:+.1f} … {null_ci[1]:+.1f}]. The same difference split by thread "
                f"(schedstat, paired with the twin's): main thread {main_us:+.1f} µs "
                f"[{main_ci[0]:+.1f} … {main_ci[1]:+.1f}] (the hooks and the block close: the "
                f"noisy part, the machine's load lands on the training thread), all other threads "
                f"{others_us:+.1f} µs [{others_ci[0]:+.1f} … {others_ci[1]:+.1f}] (export, the "
                "idle hand-over, metric reader, sampler: work only the instrumented process "
                "has, so its spread is small).",
            ]
            lines += [
                "",
                "### Per training step, resolved inside one process",
                "",
                "The process pairs above do not resolve a few µs per step on this machine (two",
                "processes of the same script differ by tens of µs per step).",
                "`bench/torch_chunks.py` runs the workload ONCE under `opentelemetry-instrument`",
                "with the defaults (distro, exporters, hardware instrumentors, span processor and",
                "metric reader all live) and",
                "switches the tracker on and off for alternating chunks of a tenth of an epoch,",
                "pairs in random order. The training thread's figure is the mean of the pairs'",
                "differences (`thread_time`; a mean, so the once-per-block work counts at its",
                "share); the instrumentation's threads are counted absolutely (their CPU per",
                "instrumented step, an upper bound: the clock-driven ones also run in the off",
                "chunks, and blocks close on their 1 s deadline with about half the steps, so the",
                "block work per step counts about twice); the residue of the switched-off hooks is",
                "added. The verdict uses this estimate. Method: the docstring of",
                "`bench/torch_chunks.py`.",
                "",
                *chunks_lines(TINY, ch_tiny),
                "",
                *chunks_lines(MEDIUM, ch_medium),
            ]
            verdicts.append(
                f"**{c_word}** (per step, defaults, everything included, resolved inside one "
                f"process): {e_tiny[0]:+.1f} µs CPU per step on the tiny model, 95 % CI "
                f"{e_tiny[1]:+.1f} … {e_tiny[2]:+.1f} µs (budget <= {BUDGET_STEP_US:g} µs), and "
                f"{e_med[0]:+.2f} % of a {ch_medium['plain_us']:,.0f} µs step, CI "
                f"{e_med[1]:+.2f} … {e_med[2]:+.2f} % (budget <= {BUDGET_STEP_PERCENT:g} %)."
            )
            verdicts.append(
                f"**{word}** (per step, process pairs, defaults, everything included): "
                f"{d_us:+.1f} µs CPU per step on the tiny model, 95 % CI {d_ci[0]:+.1f} … "
                f"{d_ci[1]:+.1f} µs (budget <= {BUDGET_STEP_US:g} µs; null row {null_us:+.1f} µs, "
                f"{null_ci[0]:+.1f} … {null_ci[1]:+.1f}) and {m_pct:+.2f} % of a {m_plain:,.0f} µs "
                f"step, CI {100 * m_ci[0] / m_plain:+.2f} … {100 * m_ci[1] / m_plain:+.2f} % "
                f"(budget <= {BUDGET_STEP_PERCENT:g} %; null row {m_null:+.2f} %). PASS needs the "
                "whole interval within budget, FAIL all of it above; NOT RESOLVED: this run's "
                "rounds do not decide."
            )
        if "fixed" in parts:
            log("fixed cost: 20-step script")
            script = directory / "steps20.py"
            script.write_text(SCRIPT_20)
            torch_off = Config(
                "`provtel_torch` disabled",
                True,
                {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "provtel_torch"},
            )
            floor = Config(
                "floor: `opentelemetry-instrument` + SDK, provtel's instrumentors, exporters and "
                "detectors off",
                True,
                FLOOR_ENV,
            )
            configs = [PLAIN, floor, DEFAULTS, torch_off]
            fixed, twins = measure_processes(script, configs, fixed_reps, directory)

            def added(
                runs: dict[str, list[Process]],
                tw: dict[str, list[Process]],
                name: str,
                field: str = "cpu_s",
            ) -> float:
                return paired(
                    [getattr(r, field) for r in runs[name]], [getattr(r, field) for r in tw[name]]
                )

            lines += [
                "",
                "### Fixed cost: start and exit of a 20-step script",
                "",
                f"A 20-step script (the tiny MLP over a `DataLoader`); {fixed_reps} runs per",
                "configuration, each launched at the same time as a plain `python` twin (pairs in",
                "turn); medians, and the median of the differences with the twin. *CPU* is the",
                "user + system time of the whole process (`os.wait4`), the figure the verdict",
                "uses: on this loaded machine the wall time of a start swings by seconds; on an",
                "idle one it is about the CPU time (start-up is single-threaded). The *floor* row",
                "is `opentelemetry-instrument` and the SDK with everything of provtel's switched",
                "off (the launcher process, entry-point scanning, SDK imports and set-up):",
                "upstream's share. *First step* is launch to the end of the first training step:",
                "wall, and the CPU the process had used by then (launcher included).",
                "",
                "| configuration | launch → exit (wall) | CPU of the process | first step (wall) "
                "| first step (CPU) | added wall | added CPU | added CPU to the first step |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for name, runs in fixed.items():
                more = (
                    "| — | — | — |"
                    if name == PLAIN.name
                    else f"| {added(fixed, twins, name, 'total_s'):+.3f} s "
                    f"| {added(fixed, twins, name):+.3f} s "
                    f"| {added(fixed, twins, name, 'cpu_first_s'):+.3f} s |"
                )
                lines.append(
                    f"| {name} | {statistics.median(r.total_s for r in runs):.3f} s | "
                    f"{statistics.median(r.cpu_s for r in runs):.3f} s | "
                    f"{statistics.median(r.printed_after_s for r in runs):.3f} s | "
                    f"{statistics.median(r.cpu_first_s or 0.0 for r in runs):.3f} s {more}"
                )
            log("fixed cost: empty script")
            empty = directory / "empty.py"
            empty.write_text(SCRIPT_EMPTY)
            hw_off = Config(
                "hardware instrumentors disabled",
                True,
                {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": HARDWARE},
            )
            e_configs = [PLAIN, floor, DEFAULTS, torch_off, hw_off]
            e, e_twins = measure_processes(
                empty, e_configs, 2 * fixed_reps, directory, document=False
            )
            lines += [
                "",
                "The same start and exit without torch (a script that only prints the time; same",
                "pairing, twice the runs), where the machine resolves tens of milliseconds:",
                "",
                "| configuration | CPU of the process | added CPU |",
                "|---|---:|---:|",
            ]
            for name, runs in e.items():
                more = "—" if name == PLAIN.name else f"{added(e, e_twins, name):+.3f} s"
                lines.append(
                    f"| {name} | {statistics.median(r.cpu_s for r in runs):.3f} s | {more} |"
                )
            fixed_added = added(fixed, twins, DEFAULTS.name)
            floor_added = added(fixed, twins, floor.name)
            e_ours = added(e, e_twins, DEFAULTS.name) - added(e, e_twins, floor.name)

            def between(a: str, b: str, field: str = "cpu_s") -> list[float]:
                """Per round: configuration ``a`` minus ``b``, each against its own twin."""
                return [
                    (x - tx) - (y - ty)
                    for x, tx, y, ty in zip(
                        *(
                            [getattr(r, field) for r in runs[name]]
                            for name in (a, b)
                            for runs in (fixed, twins)
                        ),
                        strict=True,
                    )
                ]

            # The budget is on what is provtel's to change: the floor (launcher process,
            # entry-point scans, SDK import and set-up) is upstream's, measured beside it.
            ours_runs = between(DEFAULTS.name, floor.name)
            ours, ours_ci = statistics.median(ours_runs), median_ci(ours_runs)
            startup_runs = [1e3 * v for v in between(DEFAULTS.name, torch_off.name, "cpu_first_s")]
            startup_ms, startup_ci = statistics.median(startup_runs), median_ci(startup_runs)
            startup_wall_ms = 1e3 * statistics.median(
                between(DEFAULTS.name, torch_off.name, "printed_after_s")
            )
            fixed_word = verdict_word(ours_ci, BUDGET_FIXED_S)
            startup_word = verdict_word(startup_ci, BUDGET_STARTUP_MS)
            ok &= "FAIL" not in (fixed_word, startup_word)
            verdicts.append(
                f"**{fixed_word}** (fixed cost, provtel's share): start + exit of a 20-step "
                f"script {fixed_added:+.3f} s CPU over plain Python, of which {floor_added:+.3f} s "
                f"is the floor of `opentelemetry-instrument` and the SDK (upstream's) and "
                f"{ours:+.3f} s provtel's, 95 % CI {ours_ci[0]:+.3f} … {ours_ci[1]:+.3f} s "
                f"(budget <= {BUDGET_FIXED_S:g} s; without torch, where it resolves better: "
                f"{e_ours:+.3f} s)."
                + (
                    f" The whole-process total is over {BUDGET_FIXED_S:g} s by the floor alone."
                    if floor_added > BUDGET_FIXED_S
                    else ""
                )
            )
            verdicts.append(
                f"**{startup_word}** (start-up of `provtel_torch`): launch → first step done "
                f"{startup_ms:+.0f} ms of CPU, 95 % CI {startup_ci[0]:+.0f} … "
                f"{startup_ci[1]:+.0f} ms (wall {startup_wall_ms:+.0f} ms), over "
                f"`opentelemetry-instrument` with `provtel_torch` disabled (budget <= "
                f"{BUDGET_STARTUP_MS:g} ms; PASS needs the whole interval within budget, FAIL "
                "all of it above)."
            )
        if "exit" in parts:
            log(f"exit after {EXIT_STEPS} steps")
            script = directory / "exit10k.py"
            script.write_text(SCRIPT_EXIT)
            exits, _ = measure_processes(script, [PLAIN, DEFAULTS], exit_reps, directory)
            written = statistics.median(
                r.written_after_s for r in exits[DEFAULTS.name] if r.written_after_s is not None
            )
            lines += [
                "",
                "### Finalising at exit",
                "",
                f"A script takes {EXIT_STEPS:,} DataLoader steps (a `Linear(8, 1)`, batch 4) and",
                "prints the time after the last one; *document written* is when the newest file",
                "of its run folder was written, *exit* when the process ended. "
                f"{exit_reps} runs per configuration (median):",
                "",
                "| configuration | end of training → document written | end of training → exit |",
                "|---|---:|---:|",
                f"| plain `python` | — | "
                f"{statistics.median(r.exit_after_s for r in exits[PLAIN.name]):.3f} s |",
                f"| defaults | {written:.3f} s | "
                f"{statistics.median(r.exit_after_s for r in exits[DEFAULTS.name]):.3f} s |",
                "",
                "The exit of a plain `python` process that imported torch is the floor of the last",
                "column (interpreter and torch teardown).",
            ]
            exit_ok = written <= BUDGET_EXIT_S
            ok &= exit_ok
            verdicts.append(
                f"**{'PASS' if exit_ok else 'FAIL'}** (exit): end of training to the document "
                f"written after {EXIT_STEPS:,} steps {written:.3f} s (budget <= "
                f"{BUDGET_EXIT_S:g} s)."
            )
    lines += ["", "### Verdict", "", *("- " + v for v in verdicts)]
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
