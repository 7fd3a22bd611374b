"""The fixed cost of an instrumented start and exit in instructions: a count the load of the
machine does not change.

Not a benchmark run by ``bench/run_all.py`` (it needs valgrind, which is not a dependency)::

    apt-get install valgrind
    .venv/bin/python bench/profile_startup.py [--scripts empty,steps20] [--repeat 2]
        [--pythonpath OLD/semconv/src:OLD/instrumentation/src:OLD/exporter/src]

On a shared VM the CPU time of a start that imports torch swings by ±0.5 s between runs, far
more than the differences looked for (tens of ms). ``valgrind --tool=callgrind
--separate-threads=yes`` counts the instructions each thread of a process executes: the main
thread's count (imports, set-up, the hooks, the exit handlers) is the same from run to run
within ~1 %; the other threads' counts are inflated, since valgrind stretches the run ~50x and
the threads that wake on a clock (the idle-block poller every 0.1 s, the span processor every
0.5 s) wake ~50x more often than in a real run.

It runs ``opentelemetry-instrument python <script>`` with ``--trace-children``; the counts are
those of the process after the launcher's ``exec``. The launcher's own count is lost in the
``exec`` and measured separately: ``opentelemetry-instrument --version`` builds the same
command line, scanning the same entry points, and stops there. Scripts: ``steps20`` is the
20-step script of ``bench/bench_torch.py``, ``empty`` one that prints the time; the
configurations are those of bench_torch's fixed-cost table. Prints Markdown: millions of
instructions per configuration and script, and the differences from plain ``python`` and from
the floor, in milliseconds at this machine's rate (instructions per CPU second of the floor's
start, timed natively here).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_torch import (
    DEFAULTS,
    FLOOR_ENV,
    INSTRUMENT,
    PLAIN,
    SCRIPT_20,
    SCRIPT_EMPTY,
    Config,
)

SCRIPTS = {"empty": SCRIPT_EMPTY, "steps20": SCRIPT_20}
FLOOR = Config("floor: `opentelemetry-instrument` + SDK, provtel's off", True, FLOOR_ENV)
TORCH_OFF = Config(
    "`provtel_torch` disabled", True, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "provtel_torch"}
)
CONFIGS = [PLAIN, FLOOR, DEFAULTS, TORCH_OFF]
_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def environment(c: Config, output: Path, pythonpath: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode compiled once
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["OTEL_PYTHON_PROVTEL_OUTPUT_DIR"] = str(output)
    env.update(c.env)
    return env


def instructions(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, int]:
    """Instructions of the last process image ``command`` became: (main thread, all others)."""
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                "--trace-children=yes",
                f"--callgrind-out-file={out}/cg.%p",
                *command,
            ],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        threads = {}
        for dump in Path(out).glob("cg.*-*"):
            found = _SUMMARY.search(dump.read_text(errors="replace"))
            if found:
                threads[int(dump.name.rsplit("-", 1)[1])] = int(found[1])
    if result.returncode != 0 or 1 not in threads:
        raise RuntimeError(f"{command}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return threads[1], sum(n for t, n in threads.items() if t != 1)


def rate(directory: Path, launcher: int) -> float:
    """Instructions per CPU second here: the floor's start of the empty script (launcher
    included), counted once and timed natively (best of five, ``os.wait4``)."""
    script = directory / "rate.py"
    script.write_text(SCRIPT_EMPTY)
    env = environment(FLOOR, directory, None)
    command = [str(INSTRUMENT), sys.executable, str(script)]
    best = float("inf")
    for _ in range(5):
        proc = subprocess.Popen(command, env=env, cwd=directory, stdout=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        best = min(best, usage.ru_utime + usage.ru_stime)
    return (sum(instructions(command, env, directory)) + launcher) / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", default="empty,steps20")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median)")
    parser.add_argument("--pythonpath", default=None, help="source folders of another checkout")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        launcher = sum(
            instructions(
                [str(INSTRUMENT), "--version"],
                environment(DEFAULTS, directory, args.pythonpath),
                directory,
            )
        )
        per_s = rate(directory, launcher)
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for name in args.scripts.split(","):
            script = directory / f"{name}.py"
            script.write_text(SCRIPTS[name])
            for c in CONFIGS:
                command = [sys.executable, str(script)]
                if c.instrumented:
                    command = [str(INSTRUMENT), *command]
                # once natively first: bytecode compiled and written, as installed code has it
                warm = environment(c, Path(tempfile.mkdtemp(dir=directory)), args.pythonpath)
                subprocess.run(command, env=warm, cwd=directory, capture_output=True, check=True)
                runs = []
                for _ in range(args.repeat):
                    output = Path(tempfile.mkdtemp(dir=directory))
                    runs.append(
                        instructions(command, environment(c, output, args.pythonpath), directory)
                    )
                main_thread = int(statistics.median(r[0] for r in runs))
                counts[name, c.name] = (main_thread, int(statistics.median(r[1] for r in runs)))
                print(f"  {name} {c.name}: {runs}", file=sys.stderr, flush=True)
    ms = 1e3 / per_s

    def cell(n: int) -> str:
        return f"{n / 1e6:+,.0f} M ≈ {n * ms:+.0f} ms"

    lines = [
        f"Instructions (millions) of the process after `exec`, its main thread and all other "
        f"threads; the launcher process (`opentelemetry-instrument --version`) adds "
        f"{launcher / 1e6:,.0f} M to every instrumented row. At this machine's rate "
        f"({per_s / 1e9:.2f} G instructions per CPU second), 1 M instructions ≈ "
        f"{1e6 * ms:.2f} ms. {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| script | configuration | main thread | other threads | over plain (launcher "
        "included) | main thread over the floor | all threads over the floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in args.scripts.split(","):
        plain = sum(counts[name, PLAIN.name])
        floor_main, floor_others = counts[name, FLOOR.name]
        for c in CONFIGS:
            main_n, others = counts[name, c.name]
            ours = c not in (PLAIN, FLOOR)
            lines.append(
                f"| {name} | {c.name} | {main_n / 1e6:,.0f} M | {others / 1e6:,.0f} M | "
                + (cell(main_n + others - plain + launcher) if c.instrumented else "—")
                + " | "
                + (cell(main_n - floor_main) if ours else "—")
                + " | "
                + (cell(main_n + others - floor_main - floor_others) if ours else "—")
                + " |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
