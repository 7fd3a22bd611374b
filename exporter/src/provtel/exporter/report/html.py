"""``provtel report RUN --html FILE``: one self-contained HTML file with the report's charts.

Charts are drawn with matplotlib (Agg) as inline SVG, the page is a jinja2 template with inline
CSS: no script, no font, no image is fetched from anywhere, so the file opens offline and can be
archived beside the run. Curves are bucketed to at most
:data:`~provtel.exporter.report.analysis.MAX_POINTS` points, which keeps the file small whatever
the length of the run. Needs ``provtel-exporter[report]`` (matplotlib, jinja2).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from provtel.exporter.report.analysis import PHASE_NAMES, PHASES, Progress
from provtel.exporter.report.document import RunDocument
from provtel.exporter.report.text import joules, number, seconds, size, verdict_line

_COLOURS = {
    "data_wait": "#e4572e",
    "forward_loss": "#4c72b0",
    "backward": "#55a868",
    "optimizer": "#8172b2",
    "checkpoint": "#ccb974",
    "evaluation": "#64b5cd",
    "other": "#bbbbbb",
}
_XML_HEADER = re.compile(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
            "svg.hashsalt": "provtel",  # stable ids: the same run gives the same file
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    # the RDF block says only "made by matplotlib" and when: dropped, the file is reproducible
    return _METADATA.sub("", _XML_HEADER.sub("", buf.getvalue()))


def _finite_pairs(xs: Iterable[Any], ys: Iterable[Any]) -> tuple[list[float], list[float]]:
    out_x, out_y = [], []
    for x, y in zip(xs, ys, strict=False):
        if isinstance(y, (int, float)) and isinstance(x, (int, float)) and math.isfinite(y):
            out_x.append(x)
            out_y.append(y)
    return out_x, out_y


def _label(rank: dict[str, Any]) -> str:
    return "run" if rank["rank"] is None else f"rank {rank['rank']}"


def chart_phases(plt: Any, ranks: list[dict[str, Any]]) -> str:
    """Where the wall time went, one stacked bar per rank."""
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * len(ranks)))
    names = [_label(r) for r in ranks]
    left = [0.0] * len(ranks)
    for key in PHASES:
        widths = [max(0.0, r["phases_s"][key]) for r in ranks]
        ax.barh(names, widths, left=left, color=_COLOURS[key], label=PHASE_NAMES[key])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("seconds of wall time")
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.legend(
        ncol=len(PHASES),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 - 0.05 * len(ranks)),
        frameon=False,
        fontsize=8,
    )
    return _svg(fig)


def chart_loss(plt: Any, ranks: list[dict[str, Any]], curves: list[dict[str, Any]]) -> str | None:
    """The training loss per step, and evaluation results per pass on the same step axis."""
    if not any(r["loss"]["curve"]["y"] for r in ranks):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for r in ranks:
        c = r["loss"]["curve"]
        ax.plot(
            c["x"],
            c["y"],
            lw=1.2,
            label=f"training loss ({_label(r)})" if len(ranks) > 1 else "training loss",
        )
    evals = _eval_points(ranks[0])
    for name, (xs, ys) in evals.items():
        if "loss" in name:
            ax.plot(xs, ys, "o-", ms=4, lw=1.2, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(frameon=False, fontsize=8)
    return _svg(fig)


def _eval_points(rank: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Each evaluation result (``validation ml.eval.loss`` …) against the training step it
    followed (the last training step before the pass began)."""
    steps, times = rank["timeline"]["step"], rank["timeline"]["t_s"]
    out: dict[str, tuple[list[float], list[float]]] = {}
    for i, ev in enumerate(rank["evaluations"]):
        before = [s for s, t in zip(steps, times, strict=True) if t <= ev["t_s"]]
        x = before[-1] if before else float(i)
        for name, v in (ev.get("results") or {}).items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                xs, ys = out.setdefault(f"{ev['context']} {name}", ([], []))
                xs.append(x)
                ys.append(v)
    return out


def chart_evaluation(plt: Any, rank: dict[str, Any]) -> str | None:
    """Evaluation results per pass (all results, one line each)."""
    points = _eval_points(rank)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    for name, (xs, ys) in points.items():
        ax.plot(xs, ys, "o-", ms=4, lw=1.2, label=name)
    ax.set_xlabel("training step before the pass")
    ax.legend(frameon=False, fontsize=8)
    return _svg(fig)


def chart_breakdown(plt: Any, rank: dict[str, Any]) -> str | None:
    """Mean time per step in each phase, over the run."""
    tl = rank["timeline"]
    if len(tl["t_s"]) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    keys = ("data_wait", "forward_loss", "backward", "optimizer")
    ax.stackplot(
        tl["t_s"],
        *[[v * 1e3 for v in tl[k]] for k in keys],
        labels=[PHASE_NAMES[k] for k in keys],
        colors=[_COLOURS[k] for k in keys],
        alpha=0.9,
    )
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("ms per step")
    ax.legend(frameon=False, fontsize=8, loc="upper right", ncol=4)
    return _svg(fig)


def chart_throughput(plt: Any, ranks: list[dict[str, Any]]) -> str | None:
    """Samples (or steps) per second over the run."""
    if not any(len(r["timeline"]["t_s"]) > 1 for r in ranks):
        return None
    samples = any(r["throughput"]["samples_per_s"] for r in ranks)
    key = "samples_per_s" if samples else "steps_per_s"
    fig, ax = plt.subplots(figsize=(8, 2.8))
    for r in ranks:
        xs, ys = _finite_pairs(r["timeline"]["t_s"], r["timeline"][key])
        ax.plot(xs, ys, lw=1.2, label=_label(r))
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("samples/s" if samples else "steps/s")
    if len(ranks) > 1:
        ax.legend(frameon=False, fontsize=8)
    return _svg(fig)


def chart_power(plt: Any, power: list[dict[str, Any]]) -> str | None:
    """Power readings (W) and cumulative energy (J) over the run."""
    if not power:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    for p in power:
        ax = axes[0] if str(p["name"]).startswith("hw.power") else axes[1]
        ax.plot(p["x"], p["y"], lw=1.2, label=p["name"])
    axes[0].set_ylabel("power (W)")
    axes[1].set_ylabel("energy (J)")
    for ax in axes:
        ax.set_xlabel("seconds since the run started")
        if ax.lines:
            ax.legend(frameon=False, fontsize=7)
    return _svg(fig)


def chart_metrics(plt: Any, curves: list[dict[str, Any]]) -> str | None:
    """Values logged by user code or frameworks (``provtel.log_metric``), one panel each."""
    curves = [c for c in curves if len(c["y"]) > 1][:8]
    if not curves:
        return None
    cols = 2 if len(curves) > 1 else 1
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8, 2.4 * rows), squeeze=False)
    for ax, c in zip(axes.flat, curves, strict=False):
        ax.plot(c["x"], c["y"], lw=1.2)
        ax.set_title(f"{c['name']} [{c['context']}]", fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _svg(fig)


def render_html(report: dict[str, Any], progress: Progress | None = None) -> str:
    """The HTML page of a report (with ``metric_curves`` when :func:`analyse` read them)."""
    import jinja2

    plt = _pyplot()
    ranks = report["ranks"]
    focus = ranks[0]
    if report.get("job"):
        focus = next(r for r in ranks if r["rank"] == report["job"]["slowest_rank"])
    makers = [
        ("Where the time went", lambda: chart_phases(plt, ranks)),
        ("Loss", lambda: chart_loss(plt, ranks, report.get("metric_curves", []))),
        ("Evaluation results per pass", lambda: chart_evaluation(plt, focus)),
        (f"Step time by phase ({_label(focus)})", lambda: chart_breakdown(plt, focus)),
        ("Throughput", lambda: chart_throughput(plt, ranks)),
        ("Power and energy", lambda: chart_power(plt, report.get("power", []))),
        ("Logged values", lambda: chart_metrics(plt, report.get("metric_curves", []))),
    ]
    steps = progress(makers, len(makers), "charts") if progress else makers
    charts = [(title, svg) for title, make in steps if (svg := make()) is not None]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        seconds=seconds, number=number, size=size, joules=joules, percent=lambda x: f"{x:.1%}"
    )
    template = env.get_template("report.html.j2")
    return template.render(
        r=report,
        charts=charts,
        phases=PHASES,
        phase_names=PHASE_NAMES,
        colours=_COLOURS,
        verdict_line=verdict_line,
        focus=focus,
    )


def write_html(
    report: dict[str, Any], run: RunDocument, target: Path, progress: Progress | None = None
) -> Path:
    """Write the HTML report of ``run`` to ``target``."""
    html = render_html(report, progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)
    return target
