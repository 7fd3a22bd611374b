"""What a run did and where its time went, computed from its document and series files.

:func:`analyse` turns a :class:`~provtel.exporter.report.document.RunDocument` into one plain,
JSON-serialisable dict (the ``provtel report --json`` output) that the text and HTML reports
render. Time is partitioned so the phases add up to the wall time of the run span:

* per training step (the step-block series): data wait, backward, optimizer, and forward+loss =
  step duration − data wait − backward − optimizer, less any checkpoint or evaluation that ran
  inside the step (a save after ``optimizer.step()`` falls inside the step's duration, which
  runs to the start of the next step);
* checkpointing: the checkpoint spans; evaluation: the evaluation pass spans;
* other = wall − all of the above (start-up, model building, work outside the loop).

The verdict names the largest of data wait (input-bound), forward+backward+optimizer
(compute-bound), checkpointing and evaluation, with the shares of the wall time behind it.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable
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
    STEP_LABELS,
    RunDocument,
    nano,
    otel,
    read_columns,
    value,
)
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import hardware as hw

#: Most points of a curve in the report (charts and JSON); longer series are bucketed.
MAX_POINTS = 600
#: Phases in the order they are shown.
PHASES = (
    "data_wait",
    "forward_loss",
    "backward",
    "optimizer",
    "checkpoint",
    "evaluation",
    "other",
)
PHASE_NAMES = {
    "data_wait": "data wait",
    "forward_loss": "forward+loss",
    "backward": "backward",
    "optimizer": "optimizer",
    "checkpoint": "checkpointing",
    "evaluation": "evaluation",
    "other": "other",
}
VERDICTS = {
    "input": "input-bound",
    "compute": "compute-bound",
    "checkpoint": "checkpoint-bound",
    "evaluation": "evaluation-bound",
}
_NS = 1e-9
# attributes of an evaluation pass that describe the pass, not its results
_PASS_KEYS = {
    sc.ML_ACTIVITY,
    sc.ML_CONTEXT,
    sc.ML_EPOCH,
    sc.ML_PASS_INDEX,
    sc.ML_PASS_BATCHES,
    sc.ML_PASS_SOURCE,
    "start_time_unix_nano",
    "end_time_unix_nano",
}
_EVAL_PREFIX = "ml.eval."
_PASS_PREFIXES = ("ml.dataset.", "ml.dataloader.", "ml.energy.", "ml.step.", "ml.log.", "scope.")

#: the per-step series the report reads besides ``duration``
_USED_STEP_SERIES = ("data_wait", "backward", "optimizer", "loss", "batch_size")

Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


def _no_progress(items: Iterable[Any], total: int, what: str) -> Iterable[Any]:
    return items


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _seconds(rec: dict[str, Any]) -> float:
    start, end = nano(rec, "start"), nano(rec, "end")
    return max(0.0, (end - start) * _NS) if start is not None and end is not None else 0.0


def _rank_of(rec: dict[str, Any]) -> int | None:
    r = value(rec.get("provtel:rank"))
    return r if isinstance(r, int) else None


def _json_list(text: Any) -> list[Any]:
    if isinstance(text, list):
        return text
    if isinstance(text, str):
        try:
            out = json.loads(text)
        except ValueError:
            return [text]
        return out if isinstance(out, list) else [out]
    return []


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _overlaps(
    starts: list[float], ends: list[float], intervals: list[tuple[int, int]]
) -> list[float]:
    """Seconds of each [start, end) (sorted by start, ns) covered by the disjoint sorted
    ``intervals``."""
    out = [0.0] * len(starts)
    if not intervals:
        return out
    j = 0
    n = len(intervals)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        while j < n and intervals[j][1] <= s:
            j += 1
        k, covered = j, 0.0
        while k < n and intervals[k][0] < e:
            lo, hi = max(s, intervals[k][0]), min(e, intervals[k][1])
            if hi > lo:
                covered += hi - lo
            k += 1
        out[i] = covered * _NS
    return out


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def _buckets(n: int, most: int = MAX_POINTS) -> list[tuple[int, int]]:
    if n <= 0:
        return []
    size = max(1, math.ceil(n / most))
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def curve(xs: list[float], ys: list[float], most: int = MAX_POINTS) -> dict[str, list[Any]]:
    """A curve of at most ``most`` points: bucket means of x and y (NaN left out)."""
    out_x: list[float] = []
    out_y: list[float] = []
    for lo, hi in _buckets(len(ys), most):
        pairs = [(x, y) for x, y in zip(xs[lo:hi], ys[lo:hi], strict=True) if math.isfinite(y)]
        if pairs:
            out_x.append(sum(p[0] for p in pairs) / len(pairs))
            out_y.append(sum(p[1] for p in pairs) / len(pairs))
    return {"x": out_x, "y": out_y}


class _Steps:
    """The per-step series of one context of one rank, aligned by row."""

    def __init__(self, run: RunDocument, entities: list[dict[str, Any]], progress: Progress):
        self.columns: dict[str, list[float]] = {}
        self.step: list[float] = []
        self.time: list[float] = []
        by_label: dict[str, list[dict[str, Any]]] = {}
        for e in entities:
            by_label.setdefault(str(value(e.get("prov:label"))), []).append(e)
        base = by_label.get("duration", [])
        for e in progress(base, len(base), "step durations"):
            path = run.series_path(e)
            if path is None:
                continue
            cols = read_columns(path, ("step", "value", "time_unix_nano"))
            self.step.extend(cols.get("step"))
            self.time.extend(cols.get("time_unix_nano"))
            self.columns.setdefault("duration", []).extend(cols.get("value"))
        n = len(self.step)
        others = [(lab, es) for lab, es in by_label.items() if lab in _USED_STEP_SERIES]
        for label, es in progress(others, len(others), "step series"):
            paths = [p for p in (run.series_path(e) for e in es) if p is not None]
            values: list[float] = []
            for path in paths:
                values.extend(read_columns(path, ("value",)).get("value"))
            if len(values) == n:
                # every array of a block has ml.step.count elements, written in one order
                self.columns[label] = values
                continue
            values, steps = [], []  # a series missing some blocks: align by step
            for path in paths:
                cols = read_columns(path, ("step", "value"))
                values.extend(cols.get("value"))
                steps.extend(cols.get("step"))
            at = dict(zip(steps, values, strict=False))
            self.columns[label] = [at.get(s, math.nan) for s in self.step]
        # sort by start time (blocks arrive in order, but files may be concatenated)
        if not all(map(operator.le, self.time, itertools.islice(self.time, 1, None))):
            order = sorted(range(n), key=self.time.__getitem__)
            self.step = [self.step[i] for i in order]
            self.time = [self.time[i] for i in order]
            self.columns = {k: [v[i] for i in order] for k, v in self.columns.items()}

    def __len__(self) -> int:
        return len(self.step)

    def get(self, label: str) -> list[float]:
        """A column, zeros when the run did not record it."""
        col = self.columns.get(label)
        return col if col is not None else [0.0] * len(self.step)

    def has(self, label: str) -> bool:
        return label in self.columns


def _clean(xs: list[float]) -> list[float]:
    total = sum(xs)  # NaN and infinity propagate: one C-level pass finds them
    if math.isfinite(total):
        return xs
    return [x if math.isfinite(x) else 0.0 for x in xs]


def _energy(rec: dict[str, Any]) -> dict[str, float]:
    """``ml.energy.<device>`` joules of an activity (the total under ``total``)."""
    out: dict[str, float] = {}
    prefix = "otel:ml.energy."
    for key, raw in rec.items():
        if key.startswith(prefix) and not key.endswith(".status") and key != prefix + "method":
            v = _finite(value(raw))
            if v is not None:
                out[key[len(prefix) :]] = v
    return out


def _results(rec: dict[str, Any]) -> dict[str, Any]:
    """Numeric result attributes of an evaluation pass (``ml.eval.loss`` and the like)."""
    out: dict[str, Any] = {}
    for key, raw in rec.items():
        if not key.startswith("otel:"):
            continue
        name = key[5:]
        if name in _PASS_KEYS or name.startswith(_PASS_PREFIXES):
            continue
        if name in (sc.ML_EVAL_BATCHES, sc.ML_EVAL_SAMPLES):
            continue  # the weights of the mean, not results
        v = value(raw)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name.removeprefix(_EVAL_PREFIX)] = v
    return out


def _metric_summary(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": value(e.get("prov:label")),
        "context": value(e.get("yprov:context")),
        "unit": value(e.get("otel:unit")),
        "count": value(e.get("provtel:count")),
        "first": value(e.get("provtel:first")),
        "last": value(e.get("provtel:last")),
        "min": value(e.get("provtel:min")),
        "max": value(e.get("provtel:max")),
        "file": value(e.get("dcterms:identifier")),
    }


def is_step_series(e: dict[str, Any]) -> bool:
    """A per-step series of a step block (as opposed to an instrument or a logged value)."""
    return value(e.get("prov:label")) in STEP_LABELS and "otel:description" not in e


def is_instrument(e: dict[str, Any]) -> bool:
    """A series from an OpenTelemetry instrument (hardware, throughput gauges …)."""
    return "otel:description" in e or "." in str(value(e.get("prov:label")))


class _Analysis:
    def __init__(self, run: RunDocument, progress: Progress):
        self.run = run
        self.progress = progress
        self.metrics = [e for e in run.of_type(METRIC)]
        self.ident = {id(rec): k for k, rec in run.entities.items()}
        self.act_ident = {id(rec): k for k, rec in run.activities.items()}

    # -- one rank -----------------------------------------------------------------------------
    def rank(self, rank: int | None) -> dict[str, Any]:
        run = self.run
        mine = [a for a in run.activities.values() if _rank_of(a) == rank]
        roots = [a for a in mine if value(a.get("prov:type")) == RUN]
        starts = [nano(a, "start") for a in roots] or [nano(a, "start") for a in mine]
        ends = [nano(a, "end") for a in roots] or [nano(a, "end") for a in mine]
        t0 = min((s for s in starts if s is not None), default=0)
        t1 = max((e for e in ends if e is not None), default=t0)
        wall = (t1 - t0) * _NS

        kind = lambda a: value(a.get("prov:type"))  # noqa: E731
        evals = sorted(
            (a for a in mine if kind(a) == EVALUATION), key=lambda a: nano(a, "start") or 0
        )
        epochs = [a for a in mine if kind(a) == EPOCH]
        ckpts = [a for a in mine if kind(a) == CHECKPOINT]
        blocks = [a for a in mine if kind(a) == STEP_BLOCK]
        ckpt_iv = _union([(nano(a, "start") or 0, nano(a, "end") or 0) for a in ckpts])
        eval_iv = _union([(nano(a, "start") or 0, nano(a, "end") or 0) for a in evals])
        both = _union(ckpt_iv + eval_iv)
        evaluation_s = sum(e - s for s, e in eval_iv) * _NS
        # checkpoints inside an evaluation pass count once, as evaluation
        checkpoint_s = sum(e - s for s, e in ckpt_iv) * _NS - sum(
            _overlaps([float(s)], [float(e)], eval_iv)[0] for s, e in ckpt_iv
        )

        series = [
            e
            for e in self.metrics
            if _rank_of(e) == rank
            and is_step_series(e)
            and (value(e.get("yprov:context")) or act.TRAINING) == act.TRAINING
        ]
        steps = _Steps(run, series, self.progress)
        n = len(steps)
        duration = _clean(steps.get("duration"))
        data_wait = _clean(steps.get("data_wait"))
        backward = _clean(steps.get("backward"))
        optimizer = _clean(steps.get("optimizer"))
        begins = steps.time
        finishes = [t + d * 1e9 for t, d in zip(begins, duration, strict=True)]
        inside = _overlaps(begins, finishes, both)
        forward = [
            max(0.0, d - w - b - o - x)
            for d, w, b, o, x in zip(duration, data_wait, backward, optimizer, inside, strict=True)
        ]
        phases = {
            "data_wait": sum(data_wait),
            "forward_loss": sum(forward),
            "backward": sum(backward),
            "optimizer": sum(optimizer),
            "checkpoint": checkpoint_s,
            "evaluation": evaluation_s,
        }
        phases["other"] = wall - sum(phases.values())
        shares = {k: (v / wall if wall > 0 else 0.0) for k, v in phases.items()}
        verdict = self._verdict(phases, wall)

        batch = steps.get("batch_size") if steps.has("batch_size") else []
        samples = sum(x for x in batch if math.isfinite(x)) if batch else None
        loop_s = sum(duration)
        sorted_d = sorted(duration)
        timeline = self._timeline(steps, t0, duration, data_wait, forward, backward, optimizer)
        loss = steps.get("loss") if steps.has("loss") else []
        loss_final = next((x for x in reversed(loss) if math.isfinite(x)), None)
        loss_min = min((x for x in loss if math.isfinite(x)), default=None)

        energy = _energy(roots[0]) if roots else {}
        energy_phases: dict[str, dict[str, float]] = {}
        if energy:
            training = [_energy(a) for a in epochs]
            evaluating = [_energy(a) for a in evals]
            energy_phases["training"] = _sum_dicts(training)
            energy_phases["evaluation"] = _sum_dicts(evaluating)
            rest = {
                k: v
                - energy_phases["training"].get(k, 0.0)
                - energy_phases["evaluation"].get(k, 0.0)
                for k, v in energy.items()
            }
            energy_phases["other"] = rest

        return {
            "rank": rank,
            "wall_s": wall,
            "start_unix_nano": t0,
            "end_unix_nano": t1,
            "passes": dict(
                Counter(str(value(a.get("yprov:context")) or "training") for a in epochs + evals)
            ),
            "epochs": len(epochs),
            "evaluation_passes": len(evals),
            "checkpoints": len(ckpts),
            "step_blocks": len(blocks),
            "steps": n,
            "samples": samples,
            "phases_s": phases,
            "phase_shares": shares,
            "verdict": verdict,
            "step_time_s": {
                "mean": loop_s / n if n else None,
                "median": _percentile(sorted_d, 0.5),
                "p95": _percentile(sorted_d, 0.95),
                "max": sorted_d[-1] if sorted_d else None,
            },
            "throughput": {
                "steps_per_s": n / loop_s if loop_s > 0 else None,
                "samples_per_s": samples / loop_s if samples and loop_s > 0 else None,
            },
            "timeline": timeline,
            "loss": {
                "first": next((x for x in loss if math.isfinite(x)), None),
                "final": loss_final,
                "min": loss_min,
                "curve": curve(steps.step, loss) if loss else {"x": [], "y": []},
            },
            "evaluations": [self._evaluation(a, t0) for a in evals],
            "energy_j": energy,
            "energy_phases_j": energy_phases,
        }

    @staticmethod
    def _verdict(phases: dict[str, float], wall: float) -> dict[str, Any]:
        candidates = {
            "input": phases["data_wait"],
            "compute": phases["forward_loss"] + phases["backward"] + phases["optimizer"],
            "checkpoint": phases["checkpoint"],
            "evaluation": phases["evaluation"],
        }
        kind = max(candidates, key=candidates.__getitem__)
        if candidates[kind] <= 0:
            return {"kind": None, "label": "no training steps recorded", "shares": {}}
        shares = {k: (v / wall if wall > 0 else 0.0) for k, v in candidates.items()}
        return {
            "kind": kind,
            "label": VERDICTS[kind],
            "seconds": candidates,
            "shares": shares,
            "other_share": phases["other"] / wall if wall > 0 else 0.0,
        }

    def _timeline(
        self,
        steps: _Steps,
        t0: int,
        duration: list[float],
        data_wait: list[float],
        forward: list[float],
        backward: list[float],
        optimizer: list[float],
    ) -> dict[str, list[Any]]:
        batch = _clean(steps.get("batch_size")) if steps.has("batch_size") else None
        out: dict[str, list[Any]] = {
            "t_s": [],
            "step": [],
            "steps_per_s": [],
            "samples_per_s": [],
            "data_wait": [],
            "forward_loss": [],
            "backward": [],
            "optimizer": [],
        }
        for lo, hi in _buckets(len(steps)):
            total = sum(duration[lo:hi])
            k = hi - lo
            out["t_s"].append((steps.time[lo] - t0) * _NS)
            out["step"].append(steps.step[lo])
            out["steps_per_s"].append(k / total if total > 0 else None)
            out["samples_per_s"].append(
                sum(batch[lo:hi]) / total if batch is not None and total > 0 else None
            )
            for name, col in (
                ("data_wait", data_wait),
                ("forward_loss", forward),
                ("backward", backward),
                ("optimizer", optimizer),
            ):
                out[name].append(sum(col[lo:hi]) / k)
        return out

    def _evaluation(self, a: dict[str, Any], t0: int) -> dict[str, Any]:
        ident = self.act_ident.get(id(a), "")
        datasets = [
            value(self.run.entities[d].get("prov:label"))
            for d in self.run.used.get(ident, [])
            if d in self.run.entities and value(self.run.entities[d].get("prov:type")) == DATASET
        ]
        logged = {
            str(value(e.get("prov:label"))): value(e.get("provtel:last"))
            for e in self.metrics
            if self.run.generated_by.get(self.ident.get(id(e), "")) == ident
        }
        start = nano(a, "start") or t0
        return {
            "context": value(a.get("yprov:context")),
            "epoch": otel(a, sc.ML_EPOCH),
            "index": otel(a, sc.ML_PASS_INDEX),
            "dataset": datasets[0] if datasets else otel(a, sc.ML_DATASET_NAME),
            "batches": otel(a, sc.ML_PASS_BATCHES),
            "t_s": (start - t0) * _NS,
            "duration_s": _seconds(a),
            "results": {**_results(a), **logged},
        }

    # -- the whole document -------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        run = self.run
        ranks = run.ranks()
        per_rank = [self.rank(r) for r in ranks]
        roots = run.of_type(RUN)
        root = min(roots, key=lambda a: _rank_of(a) or 0) if roots else {}
        out: dict[str, Any] = {
            "document": str(run.path),
            "folder": str(run.folder),
            "name": run.name,
            "incomplete": run.incomplete,
            "run": self._identity(root),
            "code": self._code(root),
            "hardware": self._hardware(root),
            "hyperparameters": self._hyperparameters(),
            "ranks": per_rank,
            "lineage": self._lineage(),
            "metrics": self._logged(),
            "energy": self._energy_summary(root, per_rank),
            "carbon": self._carbon(root),
            "power": self._power(per_rank[0]["start_unix_nano"] if per_rank else 0),
        }
        if len(per_rank) > 1:
            out["job"] = self._job(per_rank, root)
        return out

    def _identity(self, root: dict[str, Any]) -> dict[str, Any]:
        status = otel(root, "status_code")
        return {
            "name": otel(root, sc.ML_RUN_NAME),
            "start": value(root.get("prov:startTime")),
            "end": value(root.get("prov:endTime")),
            "status": status,
            "status_description": otel(root, "status_description"),
            "exception": otel(root, "exception.type"),
            "model": otel(root, sc.ML_MODEL_CLASS) or otel(root, sc.ML_MODEL_NAME),
            "model_parameters": otel(root, sc.ML_MODEL_PARAMETERS),
            "model_device": otel(root, sc.ML_MODEL_DEVICE),
        }

    def _code(self, root: dict[str, Any]) -> dict[str, Any]:
        agent: dict[str, Any] = {}
        for assoc in self.run.associations:
            if self.run.activities.get(assoc.get("prov:activity", "")) is root:
                agent = self.run.agents.get(assoc.get("prov:agent", ""), {})
                break
        args = otel(root, sc.PROCESS_COMMAND_ARGS)
        return {
            "script": otel(root, sc.ML_RUN_SCRIPT),
            "command": _json_list(args) if args is not None else None,
            "revision": otel(root, sc.VCS_REF_HEAD_REVISION),
            "branch": otel(root, sc.VCS_REF_HEAD_NAME),
            "repository": otel(root, sc.VCS_REPOSITORY_URL_FULL),
            "dirty": otel(root, sc.ML_VCS_DIRTY),
            "packages": {
                k: v
                for k, v in {
                    "python": otel(root, sc.PROCESS_RUNTIME_VERSION)
                    or otel(agent, "process.runtime.version"),
                    str(otel(root, sc.ML_FRAMEWORK_NAME) or "framework"): otel(
                        root, sc.ML_FRAMEWORK_VERSION
                    ),
                    "cuda": otel(root, sc.ML_CUDA_VERSION),
                    "opentelemetry-sdk": otel(agent, "telemetry.sdk.version"),
                    "provtel": otel(root, "scope.version"),
                }.items()
                if v is not None
            },
            "host": otel(agent, "host.name"),
            "os": " ".join(
                str(x) for x in (otel(agent, "os.type"), otel(agent, "os.version")) if x
            ),
        }

    def _hardware(self, root: dict[str, Any]) -> dict[str, Any]:
        gpus = []
        count = otel(root, hw.ML_HW_GPU_COUNT) or 0
        for i in range(int(count) if isinstance(count, int) else 0):
            gpus.append(
                {
                    "index": i,
                    "model": otel(root, f"ml.hw.gpu.{i}.model"),
                    "id": otel(root, f"ml.hw.gpu.{i}.id"),
                    "memory_bytes": otel(root, f"ml.hw.gpu.{i}.memory.limit"),
                    "driver": otel(root, f"ml.hw.gpu.{i}.driver_version"),
                }
            )
        return {
            "cpu": otel(root, hw.HOST_CPU_MODEL_NAME),
            "cpu_logical": otel(root, hw.ML_HOST_CPU_LOGICAL_COUNT),
            "cpu_physical": otel(root, hw.ML_HOST_CPU_PHYSICAL_COUNT),
            "cpu_available": otel(root, hw.ML_HOST_CPU_AVAILABLE),
            "memory_bytes": otel(root, hw.ML_HOST_MEMORY_SIZE),
            "gpus": gpus,
            "unavailable": _json_list(otel(root, hw.ML_HW_UNAVAILABLE)),
        }

    def _hyperparameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.run.of_type(HYPERPARAMETER):
            name = str(value(e.get("prov:label")))
            v = value(e.get("prov:value"))
            if name in out and out[name] != v:
                prev = out[name] if isinstance(out[name], list) else [out[name]]
                out[name] = [*prev, v] if v not in prev else prev
            else:
                out.setdefault(name, v)
        return out

    def _lineage(self) -> dict[str, Any]:
        run = self.run
        datasets = []
        for ident, e in run.entities.items():
            if value(e.get("prov:type")) != DATASET:
                continue
            users = [a for a, ents in run.used.items() if ident in ents and a in run.activities]
            datasets.append(
                {
                    "id": ident,
                    "name": value(e.get("prov:label")),
                    "class": otel(e, sc.ML_DATASET_CLASS),
                    "size": otel(e, sc.ML_DATASET_SIZE),
                    "path": value(e.get("dcterms:identifier")) or otel(e, sc.ML_DATASET_PATH),
                    "digest": otel(e, sc.ML_DATASET_DIGEST),
                    "passes": [_pass_name(run.activities[a]) for a in users],
                    "contexts": sorted(
                        {
                            str(value(run.activities[a].get("yprov:context")) or "training")
                            for a in users
                        }
                    ),
                }
            )
        checkpoints = []
        for ident, e in run.entities.items():
            # checkpoints: saved by the run, or loaded files (not the run's general model)
            if value(e.get("prov:type")) != MODEL or (
                ident not in run.generated_by and otel(e, sc.ML_CHECKPOINT_OPERATION) is None
            ):
                continue
            maker = run.activities.get(run.generated_by.get(ident, ""), {})
            checkpoints.append(
                {
                    "id": ident,
                    "name": value(e.get("prov:label")),
                    "path": value(e.get("dcterms:identifier")),
                    "size": otel(e, sc.FILE_SIZE),
                    "digest": otel(e, sc.ML_CHECKPOINT_DIGEST),
                    "operation": otel(e, sc.ML_CHECKPOINT_OPERATION),
                    "saved_at": value(maker.get("prov:endTime")) if maker else None,
                    "derived_from": run.derived_from.get(ident),
                    "rank": _rank_of(e) if "provtel:rank" in e else _rank_of(maker),
                }
            )
        return {"datasets": datasets, "checkpoints": checkpoints}

    def _logged(self) -> list[dict[str, Any]]:
        return [
            _metric_summary(e)
            for e in self.metrics
            if not is_step_series(e) and not is_instrument(e)
        ]

    def logged_curves(self) -> list[dict[str, Any]]:
        """Series of the values logged by user code or frameworks (for charts)."""
        out = []
        for e in self.metrics:
            if is_step_series(e) or is_instrument(e):
                continue
            path = self.run.series_path(e)
            if path is None:
                continue
            cols = read_columns(path, ("step", "value"))
            ys = cols.get("value")
            xs = cols.get("step") or [float(i) for i in range(len(ys))]
            out.append(
                {
                    "name": value(e.get("prov:label")),
                    "context": value(e.get("yprov:context")),
                    "rank": _rank_of(e),
                    **curve(xs, ys),
                }
            )
        return out

    def _energy_summary(self, root: dict[str, Any], ranks: list[dict[str, Any]]) -> dict[str, Any]:
        statuses = {
            k[len("otel:ml.energy.") : -len(".status")]: value(v)
            for k, v in root.items()
            if k.startswith("otel:ml.energy.") and k.endswith(".status")
        }
        total: dict[str, float] = {}
        for r in ranks:
            for k, v in r["energy_j"].items():
                total[k] = total.get(k, 0.0) + v
        method = otel(root, hw.ML_ENERGY_METHOD)
        out: dict[str, Any] = {"method": method, "status": statuses, "devices_j": total}
        if not total:
            reasons = [
                f"{k}: {str(v).removeprefix('unavailable: ')}" for k, v in statuses.items()
            ] or ["no energy was recorded"]
            out["unavailable"] = "; ".join(reasons)
        return out

    def _carbon(self, root: dict[str, Any]) -> dict[str, Any]:
        fields = {
            "emissions_g": hw.ML_CARBON_EMISSIONS,
            "intensity_g_per_kwh": hw.ML_CARBON_INTENSITY,
            "intensity_source": hw.ML_CARBON_INTENSITY_SOURCE,
            "intensity_year": hw.ML_CARBON_INTENSITY_YEAR,
            "region": hw.ML_CARBON_REGION,
            "pue": hw.ML_CARBON_PUE,
            "method": hw.ML_CARBON_METHOD,
            "status": hw.ML_CARBON_STATUS,
        }
        out = {k: otel(root, name) for k, name in fields.items()}
        if out["emissions_g"] is None and not out["status"]:
            out["status"] = "unavailable: the run recorded no carbon estimate"
        return out

    def _power(self, t0: int) -> list[dict[str, Any]]:
        """Power and energy readings over time (``hw.power``, ``hw.energy`` series)."""
        out = []
        for e in self.metrics:
            label = str(value(e.get("prov:label")))
            if not label.startswith((hw.HW_POWER, hw.HW_ENERGY)):
                continue
            path = self.run.series_path(e)
            if path is None:
                continue
            cols = read_columns(path, ("time_unix_nano", "value"))
            xs = [(t - t0) * _NS for t in cols.get("time_unix_nano")]
            out.append(
                {
                    "name": label,
                    "unit": value(e.get("otel:unit")),
                    "rank": _rank_of(e),
                    **curve(xs, cols.get("value")),
                }
            )
        return out

    def _job(self, ranks: list[dict[str, Any]], root: dict[str, Any]) -> dict[str, Any]:
        job_id = otel(root, sc.ML_JOB_ID) or next(
            (otel(a, sc.ML_JOB_ID) for a in self.run.agents.values() if otel(a, sc.ML_JOB_ID)),
            None,
        )
        loops = {r["rank"]: sum(r["phases_s"][k] for k in PHASES if k != "other") for r in ranks}
        walls = {r["rank"]: r["wall_s"] for r in ranks}
        slowest = max(loops, key=loops.__getitem__)
        fastest = min(loops, key=loops.__getitem__)
        ordered = sorted(loops.values())
        median = ordered[len(ordered) // 2]
        return {
            "id": job_id,
            "world_size": len(ranks),
            "slowest_rank": slowest,
            "fastest_rank": fastest,
            "busy_s": loops,
            "wall_s": walls,
            "spread_s": loops[slowest] - loops[fastest],
            "spread_share": (loops[slowest] - loops[fastest]) / median if median > 0 else 0.0,
            "stragglers": [r for r, v in loops.items() if median > 0 and v > 1.1 * median],
        }


def _sum_dicts(items: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in items:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _pass_name(a: dict[str, Any]) -> str:
    ctx = value(a.get("yprov:context")) or "training"
    epoch, index = otel(a, sc.ML_EPOCH), otel(a, sc.ML_PASS_INDEX)
    rank = _rank_of(a)
    where = f"epoch {epoch}" if epoch is not None else f"pass {index}"
    return f"{ctx} {where}" + (f" (rank {rank})" if rank is not None else "")


def analyse(
    run: RunDocument, progress: Progress | None = None, curves: bool = False
) -> dict[str, Any]:
    """The report of a run (or job) document as a JSON-serialisable dict.

    ``curves`` also reads the series of logged values (user and framework metrics) for charts.
    """
    analysis = _Analysis(run, progress or _no_progress)
    out = analysis.report()
    if curves:
        out["metric_curves"] = analysis.logged_curves()
    return out


def report_for(target: Path | str, progress: Progress | None = None) -> dict[str, Any]:
    """Load and analyse a run folder, job folder or document."""
    from provtel.exporter.report.document import load

    return analyse(load(target), progress)
