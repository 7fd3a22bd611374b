"""Benchmark: writing PROV-JSON with our streaming ``ProvJsonWriter`` versus the ``prov`` package.

Budget (docs/DESIGN "Budgets"): writing 1M records at >= 150k records/s with <= 64 MiB extra
memory. Run through ``make bench`` / ``python bench/run_all.py bench_writer``, or alone::

    .venv/bin/python bench/bench_writer.py [--quick] [--sizes 10k,100k,1M] [--repeat 3]

It prints one Markdown section on stdout (the ``bench/run_all.py`` convention) and progress on
stderr; it exits 1 when the budget fails.

Workload (as in reference/prov.md §1.4): N records in units of 5 --

* an ``activity`` with ``prov:startTime``/``prov:endTime`` and 3 attributes (``prov:label``,
  ``otel:span_id``, ``otel:step``);
* an ``entity`` with 2 attributes, ``prov:type`` a typed literal (``xsd:QName``) and
  ``prov:label``;
* ``wasGeneratedBy`` (entity by activity, at its end), ``used`` (the previous unit's entity, at the
  start) and ``wasInformedBy`` (informed by the previous unit's activity). Unit 0 points at
  ``run:input`` and ``run:root``, which are not declared.

Ids are QName-safe local names in a ``run:`` namespace with an absolute IRI. Input values are
integers (nanosecond timestamps, step numbers), as the exporter receives them from OpenTelemetry.

Modes, each (mode, N) in a fresh subprocess:

* **writer**: build each record's attribute dict the way the exporter does (``iso_time``,
  ``literal``, a QName typed literal) and pass it to ``ProvJsonWriter``; timed from creating the
  writer to ``close()`` returning (the document renamed into place).
* **prov**: build a ``prov.model.ProvDocument`` with the same records (``datetime`` times, Python
  values) and ``serialize()`` it to a file; timed from ``ProvDocument()`` to the file being written.

Memory: ``ru_maxrss`` of the subprocess at exit ("peak RSS") and "extra" = peak RSS minus the
``ru_maxrss`` of a baseline subprocess that imports the same modules and does nothing else. Times
are the median of ``--repeat`` runs, memory the largest; ``prov`` at 1M runs once (about a minute).

Equivalence is checked once at 10k: both files read back with ``prov.read(..., format="json")``
must compare equal (blank relation ids differ, ``_:g1`` vs ``_:id1``, and ``prov`` drops them on
reading; times are written ``...Z`` vs ``...+00:00``, the same instants).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET_RATE = 150_000  # records/s at 1M records
BUDGET_EXTRA_MIB = 64.0  # MiB of RSS beyond the imports
BUDGET_N = 1_000_000

NAMESPACE = "https://provtel.org/ns/"
PREFIXES = {
    "run": NAMESPACE + "run/bench/",
    "otel": NAMESPACE + "otel#",
    "provml": NAMESPACE + "provml#",
}
T0_NS = 1_700_000_000_123_456_789  # first activity start, ns since the epoch
STEP_NS = 2_345_678  # between unit starts: the second changes every ~426 units
DURATION_NS = 1_234_567
SPAN_BASE = 0x5EED_0000_0000_0000
MODES = ("writer", "prov")


# -- the workloads (run in the child process) -------------------------------------------------


def _writer_workload(n: int, path: Path) -> dict[str, float]:
    from provtel.exporter.prov.values import iso_time, literal
    from provtel.exporter.prov.writer import ProvJsonWriter

    def qname(value: str) -> dict[str, str]:  # the exporter's mapping._qname
        return {"$": value, "type": "xsd:QName"}

    t = time.perf_counter()
    w = ProvJsonWriter(path, PREFIXES)
    previous_entity, previous_activity = "run:input", "run:root"
    for i in range(n // 5):
        start = T0_NS + i * STEP_NS
        end = start + DURATION_NS
        activity = f"run:a{i}"
        entity = f"run:e{i}"
        w.element(
            "activity",
            activity,
            {
                "prov:startTime": iso_time(start),
                "prov:endTime": iso_time(end),
                "prov:label": literal(f"step {i}"),
                "otel:span_id": f"{SPAN_BASE + i:016x}",
                "otel:step": literal(i),
            },
        )
        w.element(
            "entity",
            entity,
            {"prov:type": qname("provml:Model"), "prov:label": literal(f"checkpoint {i}")},
        )
        w.relation(
            "wasGeneratedBy",
            {"prov:entity": entity, "prov:activity": activity, "prov:time": iso_time(end)},
        )
        w.relation(
            "used",
            {
                "prov:activity": activity,
                "prov:entity": previous_entity,
                "prov:time": iso_time(start),
            },
        )
        w.relation(
            "wasInformedBy", {"prov:informed": activity, "prov:informant": previous_activity}
        )
        previous_entity, previous_activity = entity, activity
    w.close()
    return {"seconds": time.perf_counter() - t}


def _prov_workload(n: int, path: Path) -> dict[str, float]:
    from datetime import datetime, timedelta, timezone

    from prov.model import PROV_LABEL, PROV_TYPE, ProvDocument

    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def when(ns: int) -> datetime:  # microseconds, as iso_time writes them
        return epoch + timedelta(microseconds=ns // 1000)

    t = time.perf_counter()
    doc = ProvDocument()
    for prefix, iri in PREFIXES.items():
        doc.add_namespace(prefix, iri)
    model = doc.valid_qualified_name("provml:Model")
    previous_entity, previous_activity = "run:input", "run:root"
    for i in range(n // 5):
        start = T0_NS + i * STEP_NS
        end = start + DURATION_NS
        activity = f"run:a{i}"
        entity = f"run:e{i}"
        doc.activity(
            activity,
            when(start),
            when(end),
            {PROV_LABEL: f"step {i}", "otel:span_id": f"{SPAN_BASE + i:016x}", "otel:step": i},
        )
        doc.entity(entity, {PROV_TYPE: model, PROV_LABEL: f"checkpoint {i}"})
        doc.wasGeneratedBy(entity, activity, when(end))
        doc.used(activity, previous_entity, when(start))
        doc.wasInformedBy(activity, previous_activity)
        previous_entity, previous_activity = entity, activity
    built = time.perf_counter()
    with open(path, "wb") as out:
        doc.serialize(out, format="json")
    done = time.perf_counter()
    return {"seconds": done - t, "build_s": built - t, "serialize_s": done - built}


def _import_only(mode: str) -> None:
    """Import what the mode imports, so that a baseline child has the same modules loaded."""
    if mode == "writer":
        import provtel.exporter.prov.values
        import provtel.exporter.prov.writer  # noqa: F401
    else:
        import datetime  # noqa: F401

        import prov.model  # noqa: F401


def _compare(first: Path, second: Path) -> dict[str, Any]:
    import prov

    a = prov.read(str(first), format="json")
    b = prov.read(str(second), format="json")
    assert a is not None and b is not None
    records_a, records_b = set(a.get_records()), set(b.get_records())
    return {
        "equal": a == b,
        "records": [len(records_a), len(records_b)],
        "only_writer": [str(r) for r in list(records_a - records_b)[:3]],
        "only_prov": [str(r) for r in list(records_b - records_a)[:3]],
    }


def _child(argv: list[str]) -> None:
    """``--child MODE N PATH`` runs one measurement; N = 0 is the baseline (imports only)."""
    if argv[0] == "compare":
        print(json.dumps(_compare(Path(argv[1]), Path(argv[2]))))
        return
    mode, n, path = argv[0], int(argv[1]), Path(argv[2])
    _import_only(mode)
    result: dict[str, Any] = {}
    if n:
        result = (_writer_workload if mode == "writer" else _prov_workload)(n, path)
        result["file_bytes"] = path.stat().st_size
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


# -- the driver (parent process) ---------------------------------------------------------------


def _spawn(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _size(text: str) -> int:
    text = text.strip().lower()
    for suffix, factor in (("m", 1_000_000), ("k", 1_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _mib(kib: float) -> float:
    return kib / 1024


def _log(message: str) -> None:
    print(f"[bench_writer] {message}", file=sys.stderr, flush=True)


def _measure(mode: str, n: int, repeat: int, workdir: Path) -> dict[str, Any]:
    runs = []
    for r in range(repeat):
        path = workdir / f"{mode}-{n}.json"
        result = _spawn(mode, str(n), str(path))
        _log(
            f"{mode} {_label(n)} run {r + 1}/{repeat}: {result['seconds']:.3f} s, "
            f"peak RSS {_mib(result['maxrss_kib']):.1f} MiB"
        )
        runs.append(result)
        if n != 10_000:  # the 10k files are kept for the equivalence check
            path.unlink(missing_ok=True)
    out: dict[str, Any] = {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "maxrss_kib": max(r["maxrss_kib"] for r in runs),
        "file_bytes": runs[0]["file_bytes"],
        "runs": len(runs),
    }
    for key in ("build_s", "serialize_s"):
        if key in runs[0]:
            out[key] = statistics.median(r[key] for r in runs)
    return out


def _fmt_rate(rate: float) -> str:
    return f"{rate / 1000:,.0f}k"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run prov only up to 100k records")
    parser.add_argument(
        "--sizes", default="10k,100k,1M", help="record counts (default: %(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per (mode, N); median time")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return 0

    sizes = sorted({_size(s) for s in args.sizes.split(",")})
    if any(n % 5 for n in sizes):
        parser.error("sizes must be multiples of 5 (records come in units of 5)")
    prov_limit = 100_000 if args.quick else max(sizes)

    baseline = {}
    for mode in MODES:
        rss = [_spawn(mode, "0", "-")["maxrss_kib"] for _ in range(3)]
        baseline[mode] = statistics.median(rss)
        _log(f"baseline {mode}: {_mib(baseline[mode]):.1f} MiB")

    results: dict[tuple[str, int], dict[str, Any]] = {}
    equivalence: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        workdir = Path(tmp)
        for n in sizes:  # sequential: one measurement at a time
            results["writer", n] = _measure("writer", n, args.repeat, workdir)
            if n <= prov_limit:
                # prov at 1M takes about a minute and 2.3 GiB: once is enough.
                repeat = 1 if n >= BUDGET_N else args.repeat
                results["prov", n] = _measure("prov", n, repeat, workdir)
        if 10_000 in sizes:
            equivalence = _spawn(
                "compare", str(workdir / "writer-10000.json"), str(workdir / "prov-10000.json")
            )
            _log(f"equivalence at 10k: {equivalence['equal']}")

    lines = [
        "## PROV-JSON writer: `ProvJsonWriter` vs the `prov` package",
        "",
        "Budget (DESIGN.md): writing 1M records at >= 150k records/s with <= 64 MiB extra "
        "memory. Workload as reference/prov.md §1.4: units of 5 records (activity with start/end "
        "+ 3 attributes, entity with 2 attributes one a typed literal, `wasGeneratedBy`, `used`, "
        "`wasInformedBy`), `run:` ids with an absolute namespace IRI. **writer** builds each "
        "attribute dict as the exporter does (`iso_time`, `literal`) and streams it through "
        "`ProvJsonWriter` (timed up to `close()`); **prov** builds a `ProvDocument` and "
        "`serialize()`s it to a file. Each (mode, N) runs in a fresh subprocess; "
        f'time = median of {args.repeat} run(s) (prov at 1M: 1 run); "extra" = the subprocess\'s '
        "peak RSS (`ru_maxrss`) minus that of a subprocess importing the same modules "
        f"(writer {_mib(baseline['writer']):.1f} MiB, prov {_mib(baseline['prov']):.1f} MiB). "
        "Ratios are prov / writer.",
        "",
        "| N | writer s | writer rec/s | writer extra MiB | prov s | prov rec/s | prov extra MiB "
        "| speed ratio | memory ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    detail = [
        "",
        "Details: peak RSS (absolute), output size, and prov's split into building the document "
        "and serialising it.",
        "",
        "| N | writer peak RSS MiB | writer file MiB | prov peak RSS MiB | prov file MiB "
        "| prov build s | prov serialize s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        w = results["writer", n]
        w_extra = _mib(w["maxrss_kib"] - baseline["writer"])
        row = [
            _label(n),
            f"{w['seconds']:.3f}",
            _fmt_rate(n / w["seconds"]),
            f"{w_extra:.1f}",
        ]
        drow = [_label(n), f"{_mib(w['maxrss_kib']):.1f}", f"{w['file_bytes'] / 2**20:.1f}"]
        p = results.get(("prov", n))
        if p is None:
            row += ["not run (`--quick`)", "", "", "", ""]
            drow += ["", "", "", ""]
        else:
            p_extra = _mib(p["maxrss_kib"] - baseline["prov"])
            row += [
                f"{p['seconds']:.3f}",
                _fmt_rate(n / p["seconds"]),
                f"{p_extra:.1f}",
                f"{p['seconds'] / w['seconds']:.1f}×",
                f"{p_extra / w_extra:.0f}×" if w_extra > 0.5 else "n/a (writer extra < 0.5 MiB)",
            ]
            drow += [
                f"{_mib(p['maxrss_kib']):.1f}",
                f"{p['file_bytes'] / 2**20:.1f}",
                f"{p['build_s']:.3f}",
                f"{p['serialize_s']:.3f}",
            ]
        lines.append("| " + " | ".join(row) + " |")
        detail.append("| " + " | ".join(drow) + " |")
    lines += detail
    lines.append("")

    if equivalence is None:
        lines.append("Equivalence: not checked (10k not among the sizes).")
    elif equivalence["equal"]:
        lines.append(
            f'Equivalence at 10k: both files read with `prov.read(..., format="json")` compare '
            f"equal ({equivalence['records'][0]} records each; blank relation ids `_:g1` vs "
            f"`_:id1` and times `Z` vs `+00:00` differ only in spelling)."
        )
    else:
        lines.append(
            f"Equivalence at 10k: **the documents differ** ({equivalence['records']} records); "
            f"only in writer: {equivalence['only_writer']}; only in prov: "
            f"{equivalence['only_prov']}."
        )
    lines.append("")

    passed = True
    if BUDGET_N in results_sizes(results):
        w = results["writer", BUDGET_N]
        rate = BUDGET_N / w["seconds"]
        extra = _mib(w["maxrss_kib"] - baseline["writer"])
        passed = rate >= BUDGET_RATE and extra <= BUDGET_EXTRA_MIB
        lines.append(
            f"**{'PASS' if passed else 'FAIL'}**: 1M records at {rate:,.0f} records/s "
            f"(budget >= {BUDGET_RATE:,}) with {extra:.1f} MiB extra memory "
            f"(budget <= {BUDGET_EXTRA_MIB:.0f} MiB)."
        )
    else:
        lines.append("Budget not evaluated: 1M records not among the sizes.")
    if equivalence is not None and not equivalence["equal"]:
        passed = False
    print("\n".join(lines))
    return 0 if passed else 1


def results_sizes(results: dict[tuple[str, int], dict[str, Any]]) -> set[int]:
    """The record counts the writer was measured at."""
    return {n for mode, n in results if mode == "writer"}


if __name__ == "__main__":
    sys.exit(main())
