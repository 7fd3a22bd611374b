"""``provtel diff RUN_A RUN_B``: what differed between two runs, and what it changed.

Inputs compared: hyperparameters, code (script, commit, dirty), package versions, data (the
identity of the datasets each context read: name, class, size, path, digest) and hardware.
Outcomes compared: final and best training loss, final and best evaluation results, time per
step, throughput, wall time, energy. The headline reads like "same code, same data,
hyperparameter seed differs → final training loss differs by …".
"""

from __future__ import annotations

import math
from typing import Any

from provtel.exporter.report.text import number, seconds

_MISSING = "(absent)"


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in list(dict.fromkeys([*a, *b])):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va != vb:
            out.append({"name": key, "a": va, "b": vb})
    return out


def _datasets(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Dataset identities by the context that read them."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d in report["lineage"]["datasets"]:
        ident = {k: d.get(k) for k in ("name", "class", "size", "path", "digest")}
        for ctx in d.get("contexts") or ["training"]:
            out.setdefault(ctx, []).append(ident)
    return {k: sorted(v, key=lambda i: str(i["name"])) for k, v in out.items()}


def _data_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    da, db = _datasets(a), _datasets(b)
    out = []
    for ctx in dict.fromkeys([*da, *db]):
        la, lb = da.get(ctx, []), db.get(ctx, [])
        if la == lb:
            continue
        fields = sorted(
            {k for x, y in zip(la, lb, strict=False) for k in x if x.get(k) != y.get(k)}
        ) or ["datasets"]
        out.append(
            {
                "context": ctx,
                "a": [x["name"] for x in la],
                "b": [x["name"] for x in lb],
                "fields": fields,
                "a_detail": la,
                "b_detail": lb,
            }
        )
    return out


def _hardware(report: dict[str, Any]) -> dict[str, Any]:
    hw = report["hardware"]
    return {
        "host": report["code"].get("host"),
        "cpu": hw.get("cpu"),
        "cpu_available": hw.get("cpu_available"),
        "memory_bytes": hw.get("memory_bytes"),
        "gpus": [g.get("model") for g in hw.get("gpus", [])],
        "world_size": report.get("job", {}).get("world_size", 1),
    }


def _code(report: dict[str, Any]) -> dict[str, Any]:
    c = report["code"]
    return {k: c.get(k) for k in ("script", "revision", "dirty", "branch")}


def _best(values: list[float], lower_is_better: bool) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None
    return min(finite) if lower_is_better else max(finite)


def _outcomes(report: dict[str, Any]) -> dict[str, Any]:
    rank = report["ranks"][0]
    if report.get("job"):
        rank = next(r for r in report["ranks"] if r["rank"] == report["job"]["slowest_rank"])
    out: dict[str, Any] = {
        "final training loss": rank["loss"].get("final"),
        "best training loss": rank["loss"].get("min"),
        "median step time (s)": rank["step_time_s"].get("median"),
        "throughput (samples/s)": rank["throughput"].get("samples_per_s"),
        "throughput (steps/s)": rank["throughput"].get("steps_per_s"),
        "wall time (s)": rank["wall_s"],
        "energy (J)": report["energy"].get("devices_j", {}).get("total"),
        "verdict": rank["verdict"].get("label"),
    }
    results: dict[str, list[float]] = {}
    for ev in rank["evaluations"]:
        for name, v in (ev.get("results") or {}).items():
            results.setdefault(f"{ev['context']} {name}", []).append(v)
    for name, values in results.items():
        lower = any(w in name for w in ("loss", "error", "perplexity", "mse", "mae"))
        out[f"final {name}"] = values[-1]
        out[f"best {name}"] = _best(values, lower)
    for m in report["metrics"]:
        out[f"last {m['name']} [{m['context']}]"] = m.get("last")
    return out


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The differences between two reports (as made by :func:`~.analysis.analyse`)."""
    result: dict[str, Any] = {
        "a": a["folder"],
        "b": b["folder"],
        "hyperparameters": _changes(a["hyperparameters"], b["hyperparameters"]),
        "code": _changes(_code(a), _code(b)),
        "packages": _changes(a["code"]["packages"], b["code"]["packages"]),
        "data": _data_changes(a, b),
        "hardware": _changes(_hardware(a), _hardware(b)),
    }
    oa, ob = _outcomes(a), _outcomes(b)
    outcomes = []
    for key in dict.fromkeys([*oa, *ob]):
        va, vb = oa.get(key), ob.get(key)
        entry: dict[str, Any] = {"name": key, "a": va, "b": vb}
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            entry["change"] = vb - va
            entry["relative"] = (vb - va) / abs(va) if va else None
        outcomes.append(entry)
    result["outcomes"] = outcomes
    result["headline"] = _headline(result)
    return result


def _names(names: list[Any]) -> str:
    return ", ".join(map(str, names)) or "(none)"


def _headline(d: dict[str, Any]) -> str:
    inputs = []
    inputs.append("different code" if d["code"] else "same code")
    if d["data"]:
        changed = [f"{c['context']} dataset {_names(c['a'])} → {_names(c['b'])}" for c in d["data"]]
        inputs.append("different data (" + ", ".join(changed) + ")")
    else:
        inputs.append("same data")
    if d["packages"]:
        inputs.append("packages differ (" + ", ".join(c["name"] for c in d["packages"]) + ")")
    if d["hardware"]:
        inputs.append("hardware differs (" + ", ".join(c["name"] for c in d["hardware"]) + ")")
    hp = d["hyperparameters"]
    if hp:
        names = ", ".join(c["name"] for c in hp[:5]) + (
            f" and {len(hp) - 5} more" if len(hp) > 5 else ""
        )
        inputs.append(
            f"hyperparameter{'s' if len(hp) > 1 else ''} {names} differ{'' if len(hp) > 1 else 's'}"
        )
    else:
        inputs.append("same hyperparameters")
    effects = []
    by_name = {o["name"]: o for o in d["outcomes"]}
    for key in (
        "final training loss",
        *[
            o["name"]
            for o in d["outcomes"]
            if o["name"].startswith("final ") and o["name"] != "final training loss"
        ],
    ):
        o = by_name.get(key)
        if o and o.get("change") is not None:
            if o["change"] == 0:
                effects.append(f"{key} is identical")
            else:
                effects.append(
                    f"{key} differs by {number(o['change'])} ({number(o['a'])} → {number(o['b'])})"
                )
    st = by_name.get("median step time (s)")
    if st and st.get("change") is not None:
        effects.append(f"median step time {seconds(st['a'])} → {seconds(st['b'])}")
    return ", ".join(inputs) + " → " + ("; ".join(effects) or "no comparable outcome")


def _show(v: Any) -> str:
    if v is _MISSING or v == _MISSING:
        return _MISSING
    return number(v) if isinstance(v, (int, float)) else str(v)


def render_diff(d: dict[str, Any]) -> str:
    """The differences for people."""
    out = [f"provtel diff\n  A {d['a']}\n  B {d['b']}", "", d["headline"], ""]
    for title, key in (
        ("Hyperparameters", "hyperparameters"),
        ("Code", "code"),
        ("Packages", "packages"),
        ("Hardware", "hardware"),
    ):
        changes = d[key]
        if not changes:
            out.append(f"{title}: same")
            continue
        out.append(f"{title}:")
        out.extend(f"  {c['name']}: {_show(c['a'])} → {_show(c['b'])}" for c in changes)
    if d["data"]:
        out.append("Data:")
        for c in d["data"]:
            out.append(
                f"  {c['context']} dataset {', '.join(map(str, c['a']))} → "
                f"{', '.join(map(str, c['b']))} (differs in {', '.join(c['fields'])})"
            )
            for x, y in zip(c["a_detail"], c["b_detail"], strict=False):
                for k in c["fields"]:
                    if k in x:
                        out.append(f"    {k}: {_show(x.get(k))} → {_show(y.get(k))}")
    else:
        out.append("Data: same")
    out.append("")
    out.append("Outcome:")
    width = max((len(o["name"]) for o in d["outcomes"]), default=10)
    for o in d["outcomes"]:
        change = ""
        if o.get("change") is not None:
            rel = f" ({o['relative']:+.1%})" if o.get("relative") is not None else ""
            change = f"  {o['change']:+.4g}{rel}"
        out.append(f"  {o['name']:<{width}}  {_show(o['a']):>12} → {_show(o['b']):<12}{change}")
    return "\n".join(out)
