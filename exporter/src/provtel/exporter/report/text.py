"""Plain-text renderings of a report: the full ``provtel report`` and the end-of-run summary."""

from __future__ import annotations

import math
from typing import Any

from provtel.exporter.report.analysis import PHASE_NAMES, PHASES


def seconds(s: float | None) -> str:
    """A duration for people: ``850 µs``, ``12.3 ms``, ``4.21 s``, ``3 min 05 s``, ``2 h 03 m``."""
    if s is None or not math.isfinite(s):
        return "–"
    sign, s = ("-" if s < 0 else ""), abs(s)
    if s < 1e-3:
        text = f"{s * 1e6:.0f} µs"
    elif s < 1:
        text = f"{s * 1e3:.1f} ms"
    elif s < 120:
        text = f"{s:.2f} s"
    elif s < 7200:
        text = f"{int(s // 60)} min {int(s % 60):02d} s"
    else:
        text = f"{int(s // 3600)} h {int(s % 3600 // 60):02d} m"
    return sign + text


def number(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (ints as they are)."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def size(n: Any) -> str:
    """Bytes for people."""
    if not isinstance(n, (int, float)):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def joules(j: float | None) -> str:
    """Energy in J, kJ, MJ, with kWh for large amounts."""
    if j is None:
        return "–"
    if j < 1e3:
        return f"{j:.1f} J"
    if j < 3.6e6:
        return f"{j / 1e3:.2f} kJ"
    return f"{j / 3.6e6:.3f} kWh"


def verdict_line(rank: dict[str, Any]) -> str:
    """``compute-bound: forward+backward+optimizer 62 % of wall time (…)``, with the numbers."""
    v = rank["verdict"]
    if not v.get("kind"):
        return v["label"]
    s, sh = v["seconds"], v["shares"]
    parts = [
        f"data wait {sh['input']:.0%} ({seconds(s['input'])})",
        f"compute {sh['compute']:.0%} ({seconds(s['compute'])})",
        f"checkpointing {sh['checkpoint']:.0%} ({seconds(s['checkpoint'])})",
        f"evaluation {sh['evaluation']:.0%} ({seconds(s['evaluation'])})",
    ]
    return f"{v['label']}: " + ", ".join(parts) + f" of {seconds(rank['wall_s'])} wall"


def _phase_table(rank: dict[str, Any], indent: str = "  ") -> list[str]:
    lines = []
    for key in PHASES:
        s = rank["phases_s"][key]
        share = rank["phase_shares"][key]
        bar = "█" * max(0, round(share * 30))
        lines.append(f"{indent}{PHASE_NAMES[key]:<14}{seconds(s):>12}  {share:>6.1%}  {bar}")
    lines.append(f"{indent}{'wall':<14}{seconds(rank['wall_s']):>12}  {1:>6.1%}")
    return lines


def _energy_lines(report: dict[str, Any]) -> list[str]:
    energy, carbon = report["energy"], report["carbon"]
    lines = []
    if energy.get("devices_j"):
        devices = ", ".join(
            f"{k} {joules(v)}" for k, v in sorted(energy["devices_j"].items()) if k != "total"
        )
        total = energy["devices_j"].get("total")
        lines.append(
            f"energy: {joules(total)} ({devices}; {energy.get('method') or 'method unknown'})"
        )
    else:
        lines.append(f"energy: unavailable: {energy.get('unavailable')}")
    if carbon.get("emissions_g") is not None:
        lines.append(
            f"carbon: {carbon['emissions_g']:.3g} gCO2eq ({carbon.get('method')}; intensity "
            f"{number(carbon.get('intensity_g_per_kwh'))} gCO2eq/kWh for "
            f"{carbon.get('region')}, {carbon.get('intensity_source')}; PUE "
            f"{number(carbon.get('pue'))})"
        )
    else:
        status = carbon.get("status") or "unavailable"
        if not str(status).startswith("unavailable"):
            status = f"unavailable: {status}"
        lines.append(f"carbon: {status}")
    return lines


def _eval_result(ev: dict[str, Any]) -> str:
    results = ev.get("results") or {}
    if not results:
        return "no results recorded"
    return ", ".join(f"{k} {number(v)}" for k, v in results.items())


def _verdict_share(v: dict[str, Any]) -> str:
    if not v.get("kind"):
        return ""
    what = {"input": "data wait", "compute": "compute", "checkpoint": "checkpointing"}
    name = what.get(v["kind"], v["kind"])
    return f" ({name} {v['shares'][v['kind']]:.0%} of the wall time)"


def summary(report: dict[str, Any]) -> str:
    """The short end-of-run block printed on stderr."""
    ranks = report["ranks"]
    first = ranks[0]
    lines = [f"provtel: {report['folder']}"]
    job = report.get("job")
    if job:
        slow = next(r for r in ranks if r["rank"] == job["slowest_rank"])
        lines.append(
            f"  job of {job['world_size']} ranks; slowest rank {job['slowest_rank']} "
            f"(spread {seconds(job['spread_s'])}, {job['spread_share']:.0%})"
        )
        first = slow
    counts = ", ".join(f"{n} {ctx}" for ctx, n in first["passes"].items()) or "none"
    lines.append(
        f"  passes: {counts}; {first['steps']} training steps; wall {seconds(first['wall_s'])}"
    )
    ph, sh = first["phases_s"], first["phase_shares"]
    compute = ph["forward_loss"] + ph["backward"] + ph["optimizer"]
    compute_share = sh["forward_loss"] + sh["backward"] + sh["optimizer"]
    lines.append(
        f"  time: data wait {seconds(ph['data_wait'])} ({sh['data_wait']:.0%}), compute "
        f"{seconds(compute)} ({compute_share:.0%}), checkpointing {seconds(ph['checkpoint'])} "
        f"({sh['checkpoint']:.0%}), evaluation {seconds(ph['evaluation'])} "
        f"({sh['evaluation']:.0%}), other {seconds(ph['other'])} ({sh['other']:.0%})"
    )
    lines.append(f"  verdict: {first['verdict']['label']}" + _verdict_share(first["verdict"]))
    loss = first["loss"]
    if loss.get("final") is not None:
        lines.append(f"  training loss: final {number(loss['final'])} (min {number(loss['min'])})")
    evals = first["evaluations"]
    for ctx in dict.fromkeys(e["context"] for e in evals):
        passes = [e for e in evals if e["context"] == ctx]
        lines.append(f"  {ctx}: {_eval_result(passes[-1])} (pass {len(passes)} of {len(passes)})")
    lines.extend("  " + line for line in _energy_lines(report))
    lines.append(f"  more: provtel report {report['folder']}")
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The full text report."""
    out: list[str] = []
    run, code = report["run"], report["code"]
    out.append(f"provtel report: {report['folder']}")
    if report.get("incomplete"):
        out.append("  (recovered from a journal: the run did not finish)")
    status = run.get("exception") or run.get("status_description") or run.get("status")
    out.append(f"  run {run.get('name')}  {run.get('start')} → {run.get('end')}  status {status}")
    if run.get("model"):
        out.append(
            f"  model {run['model']} ({number(run.get('model_parameters'))} parameters on "
            f"{run.get('model_device')})"
        )
    job = report.get("job")
    if job:
        out.append("")
        out.append(f"Job {job.get('id')}: {job['world_size']} ranks")
        for r in report["ranks"]:
            mark = "  ← slowest" if r["rank"] == job["slowest_rank"] else ""
            out.append(
                f"  rank {r['rank']}: busy {seconds(job['busy_s'][r['rank']])}, wall "
                f"{seconds(r['wall_s'])}, {r['steps']} steps, {r['verdict']['label']}{mark}"
            )
        out.append(
            f"  spread {seconds(job['spread_s'])} ({job['spread_share']:.1%} of the median); "
            f"stragglers: {', '.join(map(str, job['stragglers'])) or 'none'}"
        )
    for r in report["ranks"]:
        title = "Time" if r["rank"] is None else f"Time, rank {r['rank']}"
        out.append("")
        out.append(
            f"{title}: {r['steps']} training steps in {r['step_blocks']} blocks, "
            f"{r['epochs']} epochs, {r['evaluation_passes']} evaluation passes, "
            f"{r['checkpoints']} checkpoints"
        )
        out.extend(_phase_table(r))
        out.append(f"  verdict: {verdict_line(r)}")
        st, tp = r["step_time_s"], r["throughput"]
        out.append(
            f"  step time: median {seconds(st['median'])}, mean {seconds(st['mean'])}, p95 "
            f"{seconds(st['p95'])}, max {seconds(st['max'])}"
        )
        if tp["steps_per_s"]:
            samples = f"{tp['samples_per_s']:.1f} samples/s, " if tp["samples_per_s"] else ""
            out.append(f"  throughput: {samples}{tp['steps_per_s']:.2f} steps/s")
            tl = r["timeline"]
            if len(tl["t_s"]) > 1:
                key = "samples_per_s" if tp["samples_per_s"] else "steps_per_s"
                values = [v for v in tl[key] if v is not None]
                out.append(
                    f"  over time: {_sparkline(values)}  ({min(values):.1f}–{max(values):.1f} "
                    f"{key.replace('_per_s', '/s')})"
                )
        loss = r["loss"]
        if loss["final"] is not None:
            out.append(
                f"  training loss: first {number(loss['first'])}, final {number(loss['final'])}, "
                f"min {number(loss['min'])}  {_sparkline(loss['curve']['y'])}"
            )
        if r["evaluations"]:
            out.append("  evaluation passes:")
            for ev in r["evaluations"]:
                out.append(
                    f"    {ev['context']:<11} epoch {ev['epoch']}  {ev['dataset']}  "
                    f"{ev['batches']} batches  {seconds(ev['duration_s'])}  {_eval_result(ev)}"
                )
        if r["energy_phases_j"]:
            parts = [f"{k} {joules(v.get('total'))}" for k, v in r["energy_phases_j"].items() if v]
            out.append("  energy by phase: " + ", ".join(parts))
    if report["metrics"]:
        out.append("")
        out.append("Logged values:")
        for m in report["metrics"]:
            out.append(
                f"  {m['name']} [{m['context']}]: last {number(m['last'])}, min "
                f"{number(m['min'])}, max {number(m['max'])} ({m['count']} values)"
            )
    out.append("")
    out.append("Energy and carbon:")
    out.extend("  " + line for line in _energy_lines(report))
    for k, v in report["energy"].get("status", {}).items():
        out.append(f"    {k}: {v}")
    hwr = report["hardware"]
    out.append("")
    out.append("Hardware:")
    out.append(
        f"  CPU {hwr.get('cpu')} ({hwr.get('cpu_physical')} cores, {hwr.get('cpu_logical')} "
        f"logical, {hwr.get('cpu_available')} available), memory {size(hwr.get('memory_bytes'))}"
        f", host {code.get('host')}, {code.get('os')}"
    )
    for g in hwr["gpus"]:
        out.append(f"  GPU {g['index']}: {g['model']} {size(g['memory_bytes'])} ({g['id']})")
    for u in hwr["unavailable"]:
        out.append(f"  unavailable: {u}")
    out.append("")
    out.append("Code:")
    dirty = {True: " (dirty)", False: "", None: ""}.get(code.get("dirty"), "")
    out.append(f"  script {code.get('script')}")
    if code.get("command"):
        out.append("  command " + " ".join(map(str, code["command"])))
    if code.get("revision"):
        out.append(f"  commit {code['revision']}{dirty} on {code.get('branch')}")
    out.append("  " + ", ".join(f"{k} {v}" for k, v in code["packages"].items()))
    hp = report["hyperparameters"]
    if hp:
        out.append("")
        out.append("Hyperparameters:")
        width = max(len(k) for k in hp)
        out.extend(f"  {k:<{width}}  {v}" for k, v in hp.items())
    lin = report["lineage"]
    out.append("")
    out.append("Lineage:")
    for d in lin["datasets"]:
        extra = ", ".join(
            f"{k} {d[k]}" for k in ("class", "size", "path", "digest") if d.get(k) is not None
        )
        out.append(f"  dataset {d['name']} ({extra})")
        out.append(f"    → {', '.join(d['passes']) or 'no pass'}")
    for c in lin["checkpoints"]:
        origin = f" ← {c['derived_from']}" if c.get("derived_from") else ""
        out.append(
            f"  checkpoint {c['name']} {size(c.get('size'))} {c.get('digest') or ''} "
            f"{c.get('operation') or ''} {c.get('saved_at') or ''}{origin}".rstrip()
        )
    return "\n".join(out)


_SPARK = "▁▂▃▄▅▆▇█"


def _sparkline(values: list[float], width: int = 40) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [
            sum(values[int(i * step) : max(int(i * step) + 1, int((i + 1) * step))])
            / max(1, int((i + 1) * step) - int(i * step))
            for i in range(width)
        ]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(_SPARK[min(7, int((v - lo) / span * 7.999))] for v in values)
