"""Where an instrumented training step spends its time: py-spy samples, attributed per thread.

Not a benchmark run by ``bench/run_all.py`` (it needs py-spy, which is not a dependency)::

    pip install py-spy            # anywhere; pass its path with --py-spy if not on PATH
    .venv/bin/python bench/profile_torch.py [--epochs 6] [--rate 1000] [--keep samples.txt]

It runs ``bench/torch_workload.py`` (the tiny MLP of issue 9) under ``opentelemetry-instrument``'s
``sitecustomize`` with ``py-spy record --threads --nonblocking --format raw`` and prints, as
Markdown:

* for the main thread, the samples inside the training loop by owner: torch (or the script)
  versus provtel's own frames with no torch frame below them (a hook's own work, including the
  standard library and the OpenTelemetry SDK it calls), the latter by provtel function;
* for every other thread, its samples by the innermost provtel function (or the innermost
  frame when no provtel frame is on the stack).

py-spy counts a thread that waits for the GIL as running, so the background threads' shares are
upper bounds; their CPU time is measured exactly by ``bench/bench_torch.py`` (schedstat).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "torch_workload.py"
_FRAME = re.compile(r"(?P<fn>.*) \((?P<path>.*):(?P<line>\d+)\)$")


def owner(frame: str) -> tuple[str | None, str, str]:
    """(kind, function, short path) of one py-spy frame."""
    m = _FRAME.match(frame)
    if not m:
        return None, frame, ""
    fn, path = m["fn"], m["path"]
    if "/src/provtel/" in path:
        return "provtel", fn, path.split("/src/provtel/")[1]
    if "/site-packages/torch/" in path:
        return "torch", fn, path.split("/site-packages/")[1]
    if path.endswith("torch_workload.py"):
        return "script", fn, "torch_workload.py"
    return None, fn, path


def in_loop(frames: list[str]) -> bool:
    return any("torch_workload.py" in f and "epoch (" in f for f in frames)


def analyse(samples: Path) -> list[str]:
    loop = 0
    owners: collections.Counter[str] = collections.Counter()
    hooks: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    by_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        name = frames[0].split(": ", 1)[1] if ": " in frames[0] else "(unnamed)"
        if name != "MainThread":
            threads[name] += n
            key = None
            for f in reversed(frames[1:]):
                kind, fn, path = owner(f)
                if kind == "provtel":
                    key = f"{path}: {fn}"
                    break
            by_thread[name][key or f"(no provtel frame) {owner(frames[-1])[1]}"] += n
            continue
        if not in_loop(frames):
            continue
        loop += n
        provtel = [i for i, f in enumerate(frames) if owner(f)[0] == "provtel"]
        if provtel and not any(owner(f)[0] == "torch" for f in frames[provtel[-1] + 1 :]):
            _, fn, path = owner(frames[provtel[-1]])
            owners["provtel (own work)"] += n
            hooks[f"{path}: {fn}"] += n
        else:
            owners["torch and the script"] += n
    out = [
        f"Main thread, inside the training loop: {loop} samples.",
        "",
        "| owner | samples | share of the loop |",
        "|---|---:|---:|",
    ]
    out += [f"| {k} | {v} | {100 * v / max(loop, 1):.1f} % |" for k, v in owners.most_common()]
    out += ["", "| provtel function (own work, main thread) | samples | share of the loop |"]
    out += ["|---|---:|---:|"]
    out += [f"| `{k}` | {v} | {100 * v / max(loop, 1):.2f} % |" for k, v in hooks.most_common(20)]
    for name, total in threads.most_common():
        out += ["", f"Thread `{name}`: {total} samples (GIL waits included).", ""]
        out += ["| innermost provtel function | samples |", "|---|---:|"]
        out += [f"| `{k}` | {v} |" for k, v in by_thread[name].most_common(10)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rate", type=int, default=1000, help="samples per second")
    parser.add_argument("--keep", type=Path, help="also keep py-spy's raw samples here")
    args = parser.parse_args()
    import opentelemetry.instrumentation.auto_instrumentation as auto

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    paths = [os.path.dirname(auto.__file__), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)  # what opentelemetry-instrument does, minus exec
    with tempfile.TemporaryDirectory() as tmp:
        env["OTEL_PYTHON_PROVTEL_OUTPUT_DIR"] = tmp
        samples = args.keep or Path(tmp) / "samples.txt"
        command = [
            args.py_spy,
            "record",
            "--threads",
            "--nonblocking",
            "--full-filenames",
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "-o",
            str(samples),
            "--",
            sys.executable,
            str(WORKLOAD),
            "--epochs",
            str(args.epochs),
        ]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        print("\n".join(analyse(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
