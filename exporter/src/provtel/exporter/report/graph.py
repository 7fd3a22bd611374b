"""``provtel graph DOC -o run.svg``: the PROV graph of a run, drawn with Graphviz.

The graph is built here as DOT (no pydot): W3C PROV's usual shapes and colours (entities yellow
ellipses, activities blue boxes, agents orange houses), labels a person can read (``epoch 1
(training) 4.2 s``, ``save epoch_1.pt``), and the bulk collapsed: the step blocks of a pass
become one node (``12 step blocks, steps 0–11 999``), hyperparameters one plan node, metric
series one node per activity that generated them. Graphviz's ``dot`` (Debian package
``graphviz``) renders SVG, PNG or PDF; a ``.dot`` output needs nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from provtel.exporter.report.document import (
    CHECKPOINT,
    DATASET,
    EPOCH,
    EVALUATION,
    HYPERPARAMETER,
    METRIC,
    MODEL,
    RUN,
    STEP_BLOCK,
    RunDocument,
    nano,
    otel,
    value,
)
from provtel.exporter.report.text import seconds, size
from provtel.semconv import attributes as sc

_ENTITY = 'shape=ellipse, style=filled, fillcolor="#FFFC87", color="#808080"'
_ACTIVITY = 'shape=box, style=filled, fillcolor="#9FB1FC", color="#0000FF"'
_AGENT = 'shape=house, style=filled, fillcolor="#FED37F"'
_COLLAPSED = 'shape=box3d, style=filled, fillcolor="#C9D3FD", color="#0000FF"'


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _duration(rec: dict[str, Any]) -> str:
    start, end = nano(rec, "start"), nano(rec, "end")
    return seconds((end - start) / 1e9) if start is not None and end is not None else ""


def _rank_suffix(rec: dict[str, Any]) -> str:
    r = value(rec.get("provtel:rank"))
    return f" [rank {r}]" if isinstance(r, int) else ""


def activity_label(rec: dict[str, Any]) -> str:
    """A readable label for a provtel activity."""
    kind = value(rec.get("prov:type"))
    ctx = value(rec.get("yprov:context"))
    took = _duration(rec)
    if kind == RUN:
        text = f"run {otel(rec, sc.ML_RUN_NAME) or ''}".strip()
    elif kind == EPOCH:
        text = f"epoch {otel(rec, sc.ML_EPOCH)} ({ctx or 'training'})"
    elif kind == EVALUATION:
        text = f"{ctx or 'evaluation'} pass {otel(rec, sc.ML_PASS_INDEX)}"
        loss = otel(rec, sc.ML_EVAL_LOSS)
        if isinstance(loss, (int, float)):
            text += f"\nloss {loss:.4g}"
    elif kind == CHECKPOINT:
        path = otel(rec, sc.FILE_PATH)
        operation = otel(rec, sc.ML_CHECKPOINT_OPERATION) or "checkpoint"
        text = f"{operation} {Path(path).name if path else ''}".strip()
    else:
        text = str(value(rec.get("prov:label")) or "activity")
    return f"{text}{_rank_suffix(rec)}\n{took}".strip()


def entity_label(rec: dict[str, Any]) -> str:
    """A readable label for a dataset or checkpoint entity."""
    kind = value(rec.get("prov:type"))
    name = str(value(rec.get("prov:label")) or "")
    if kind == DATASET:
        n = otel(rec, sc.ML_DATASET_SIZE)
        digest = otel(rec, sc.ML_DATASET_DIGEST)
        extra = f"\n{n} samples" if n is not None else ""
        if digest:
            extra += f"\n{str(digest)[:19]}…"
        return f"dataset {name}{extra}"
    if kind == MODEL:
        digest = otel(rec, sc.ML_CHECKPOINT_DIGEST)
        file_size = otel(rec, sc.FILE_SIZE)
        extra = f"\n{size(file_size)}" if file_size is not None else ""
        if digest:
            extra += f"\n{str(digest)[:19]}…"
        return f"model {name}{extra}"
    return name


def build_dot(run: RunDocument) -> str:
    """The DOT text of a run's PROV graph, step blocks, hyperparameters and metrics collapsed."""
    lines = [
        "digraph prov {",
        "  rankdir=BT;",
        '  graph [fontname="DejaVu Sans", fontsize=11, nodesep=0.3, ranksep=0.45];',
        '  node [fontname="DejaVu Sans", fontsize=10];',
        '  edge [fontname="DejaVu Sans", fontsize=8, color="#555555", fontcolor="#555555"];',
    ]
    ids: dict[str, str] = {}

    def node(ident: str, label: str, style: str) -> str:
        if ident not in ids:
            ids[ident] = f"n{len(ids)}"
            lines.append(f"  {ids[ident]} [label={_quote(label)}, {style}];")
        return ids[ident]

    def edge(a: str, b: str, label: str) -> None:
        lines.append(f"  {a} -> {b} [label={_quote(label)}];")

    # parent of each activity, from wasInformedBy(informed=child, informant=parent)
    parent: dict[str, str] = {}
    for rel in (run.doc.get("wasInformedBy") or {}).values():
        rel = rel[0] if isinstance(rel, list) else rel
        if "prov:informed" in rel and "prov:informant" in rel:
            parent[rel["prov:informed"]] = rel["prov:informant"]

    blocks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ident, rec in run.activities.items():
        if value(rec.get("prov:type")) == STEP_BLOCK:
            blocks[parent.get(ident, "")].append(rec)
        else:
            node(ident, activity_label(rec), _ACTIVITY)
    for ident, rec in run.activities.items():
        kind = value(rec.get("prov:type"))
        if ident in parent and kind != STEP_BLOCK and parent[ident] in run.activities:
            edge(ids[ident], node(parent[ident], "", _ACTIVITY), "wasInformedBy")
    for owner, recs in blocks.items():
        firsts = [otel(r, sc.ML_STEP_FIRST) for r in recs]
        counts = [otel(r, sc.ML_STEP_COUNT) for r in recs]
        valid = [
            (f, c)
            for f, c in zip(firsts, counts, strict=True)
            if isinstance(f, int) and isinstance(c, int)
        ]
        steps = (
            f"steps {min(f for f, _ in valid)}–{max(f + c - 1 for f, c in valid)}" if valid else ""
        )
        total = sum((nano(r, "end") or 0) - (nano(r, "start") or 0) for r in recs) / 1e9
        label = f"{len(recs)} step block{'s' if len(recs) > 1 else ''}\n{steps}\n{seconds(total)}"
        collapsed = node(f"blocks:{owner}", label.strip(), _COLLAPSED)
        if owner in ids:
            edge(collapsed, ids[owner], "wasInformedBy")

    for ident, rec in run.entities.items():
        kind = value(rec.get("prov:type"))
        if kind in (DATASET, MODEL):
            node(ident, entity_label(rec), _ENTITY)
        elif kind == "prov:Plan":
            n = sum(1 for k in rec if k.startswith("provml:"))
            node(ident, f"hyperparameters\n{n} values", _ENTITY)
    hparams = [i for i in run.by_type.get(HYPERPARAMETER, [])]
    metric_owner: dict[str, list[str]] = defaultdict(list)
    for ident in run.by_type.get(METRIC, []):
        metric_owner[run.generated_by.get(ident, "")].append(
            str(value(run.entities[ident].get("prov:label")))
        )

    for activity, ents in run.used.items():
        if activity not in ids:
            continue
        for e in ents:
            if e in ids:
                edge(ids[activity], ids[e], "used")
    for e, activity in run.generated_by.items():
        if e in ids and activity in ids:
            edge(ids[e], ids[activity], "wasGeneratedBy")
    for e, source in run.derived_from.items():
        if e in ids and source in ids:
            edge(ids[e], ids[source], "wasDerivedFrom")
    for rel in (run.doc.get("specializationOf") or {}).values():
        rel = rel[0] if isinstance(rel, list) else rel
        a, b = rel.get("prov:specificEntity"), rel.get("prov:generalEntity")
        if a in ids and b in ids:
            edge(ids[a], ids[b], "specializationOf")
    for activity, labels in metric_owner.items():
        if activity not in ids:
            continue
        shown = ", ".join(sorted(set(labels))[:6]) + (" …" if len(set(labels)) > 6 else "")
        m = node(f"metrics:{activity}", f"{len(labels)} metric series\n{shown}", _ENTITY)
        edge(m, ids[activity], "wasGeneratedBy")
    if hparams and not any(value(r.get("prov:type")) == "prov:Plan" for r in run.entities.values()):
        node("hparams", f"{len(hparams)} hyperparameters", _ENTITY)

    for ident, rec in run.agents.items():
        kind = value(rec.get("prov:type"))
        label = str(value(rec.get("prov:label")) or ident)
        if kind == "prov:SoftwareAgent":
            host = otel(rec, "host.name")
            label = f"{label}{_rank_suffix(rec) or ''}" + (f"\non {host}" if host else "")
            r = otel(rec, sc.ML_RANK)
            if isinstance(r, int):
                label += f"\nrank {r}"
        node(ident, label, _AGENT)
    for rel in run.associations:
        a, ag, plan = rel.get("prov:activity"), rel.get("prov:agent"), rel.get("prov:plan")
        if a in ids and ag in ids:
            edge(ids[a], ids[ag], "wasAssociatedWith")
            if plan in ids:
                edge(ids[a], ids[plan], "plan")
    for rel in (run.doc.get("actedOnBehalfOf") or {}).values():
        rel = rel[0] if isinstance(rel, list) else rel
        a, b = rel.get("prov:delegate"), rel.get("prov:responsible")
        if a in ids and b in ids:
            edge(ids[a], ids[b], "actedOnBehalfOf")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(run: RunDocument, output: Path) -> Path:
    """Write the graph as ``output`` (format from its suffix: svg, png, pdf, dot)."""
    dot_text = build_dot(run)
    fmt = output.suffix.lstrip(".").lower() or "svg"
    if fmt in ("dot", "gv"):
        output.write_text(dot_text, encoding="utf-8")
        return output
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"unknown graph format {fmt!r}: use .svg, .png, .pdf or .dot")
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(
            "Graphviz's dot is needed to draw the graph (Debian: apt-get install graphviz); "
            f"`provtel graph {run.path} -o run.dot` writes the DOT text without it"
        )
    result = subprocess.run(
        [dot, f"-T{fmt}", "-o", str(output)],
        input=dot_text.encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return output
