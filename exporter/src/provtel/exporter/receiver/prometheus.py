"""The latest metric points received, in the Prometheus text format (``GET /metrics``).

With it, ``provtel serve`` stands in for a Collector's ``prometheus`` exporter when none is
deployed: Prometheus scrapes the receiver and sees the same names it would see through the
Collector. Names follow OpenTelemetry's Prometheus compatibility rules as the Collector
implements them (``prometheus/otlptranslator``, with metric suffixes):

* the name's characters outside ``[A-Za-z0-9:]`` split it into tokens joined by ``_``
  (``hw.gpu.utilization`` -> ``hw_gpu_utilization``);
* the unit is appended in Prometheus' words (``s`` -> ``seconds``, ``By`` -> ``bytes``, ``J`` ->
  ``joules``, ``W`` -> ``watts``, ``Cel`` -> ``celsius``, ``Hz`` -> ``hertz``) unless already a
  token of the name; a unit with a ``{annotation}`` adds nothing; ``X/Y`` adds ``X_per_Y``;
* monotonic sums (counters) end in ``_total``; gauges of unit ``1`` end in ``_ratio``;
* labels: the point's attributes (characters outside ``[A-Za-z0-9_]`` -> ``_``), ``job``
  (``service.namespace/service.name``), ``instance`` (``service.instance.id``),
  ``otel_scope_name``/``otel_scope_version``; each resource's other attributes are on
  ``target_info``.

Scrape with ``honor_labels: true`` so ``job`` and ``instance`` stay those of the training
processes. Memory is bounded in count and in bytes: at most ``max_series`` series, and at most
``max_bytes`` of exposition text for all of them together (each series is charged the length
of its lines: name, labels, value; a family its ``# HELP``/``# TYPE`` lines, the help cut to
:data:`MAX_HELP_CHARS`), so the ``/metrics`` page is at most about ``max_bytes`` too. New
series beyond either bound are dropped (logged once; PROV keeps everything); series not
updated for ``stale_after_s`` disappear and give their bytes back. Delta sums and histograms
are accumulated; exponential histograms and summaries are not exposed.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from provtel.exporter.prov.otlp import _attrs, attributes

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Longest ``# HELP`` text kept (a metric's description), characters.
MAX_HELP_CHARS = 1024
#: Characters of a line besides its name and labels (value, separators), as charged.
_LINE_OVERHEAD = 32

_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tebibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_NAME_SPLIT = re.compile(r"[^A-Za-z0-9:]+")
_UNIT_CLEAN = re.compile(r"[^A-Za-z0-9:]+")
_LABEL_CLEAN = re.compile(r"[^A-Za-z0-9_]")
_AGGREGATION_DELTA = 1

#: Instrument kinds as provtel.semconv declares them -> (OTLP data kind, monotonic).
INSTRUMENT_KINDS = {
    "counter": ("sum", True),
    "updowncounter": ("sum", False),
    "gauge": ("gauge", False),
    "histogram": ("histogram", False),
}


def _unit_suffixes(unit: str) -> tuple[str, str]:
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main_suffix = ""
    if main and "{" not in main and "}" not in main:
        main_suffix = _UNIT_CLEAN.sub("_", _UNITS.get(main, main)).strip("_")
    per_suffix = ""
    if per and "{" not in per and "}" not in per:
        cleaned = _UNIT_CLEAN.sub("_", _PER_UNITS.get(per, per)).strip("_")
        per_suffix = "per_" + cleaned if cleaned else ""
    return main_suffix, per_suffix


def metric_name(name: str, unit: str, kind: str, monotonic: bool = False) -> str:
    """The Prometheus name of an OTLP metric; ``kind`` is ``gauge``, ``sum`` or ``histogram``.

    For a semconv instrument kind (``counter``, ``updowncounter``, ...) use
    :func:`instrument_metric_name`. Histograms get ``_bucket``/``_sum``/``_count`` on top.
    """
    tokens = [t for t in _NAME_SPLIT.split(name) if t]
    main, per = _unit_suffixes(unit)
    if main and main not in tokens:
        tokens.append(main)
    if per and per not in tokens:
        tokens.append(per)
    if kind == "sum" and monotonic:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    result = "_".join(tokens)
    return "_" + result if result[:1].isdigit() else result


def instrument_metric_name(name: str, unit: str, instrument: str) -> str:
    """The Prometheus name of a metric declared in :data:`provtel.semconv.METRICS`."""
    kind, monotonic = INSTRUMENT_KINDS[instrument]
    return metric_name(name, unit, kind, monotonic)


def label_name(key: str) -> str:
    """The Prometheus label name of an attribute key."""
    label = _LABEL_CLEAN.sub("_", key)
    if label[:1].isdigit():
        return "key_" + label
    if label.startswith("_") and not label.startswith("__"):
        return "key" + label
    return label or "key_"


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def _labels(attributes: dict[str, Any], extra: Iterable[tuple[str, str]]) -> tuple[Any, ...]:
    merged: dict[str, list[tuple[str, str]]] = {}
    for key, value in attributes.items():
        merged.setdefault(label_name(key), []).append((key, _label_value(value)))
    labels = {name: ";".join(v for _, v in sorted(values)) for name, values in merged.items()}
    for name, value in extra:
        labels[name] = value
    return tuple(sorted(labels.items()))


@dataclass(slots=True)
class _Sample:
    updated: float
    cost: int = 0
    value: float = 0.0
    bounds: tuple[float, ...] = ()
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0


@dataclass(slots=True)
class _Family:
    name: str
    type: str
    help: str
    cost: int = 0
    samples: dict[tuple[Any, ...], _Sample] = field(default_factory=dict)


def _series_cost(name: str, labels: tuple[Any, ...], lines: int) -> int:
    """Bytes of exposition charged for a series of ``lines`` lines (a histogram's buckets
    have one more label, ``le``)."""
    label_text = sum(len(k) + len(v) + 4 for k, v in labels)
    return (len(name) + label_text + _LINE_OVERHEAD + 16) * lines


class PrometheusView:
    """Latest value of every series received; renders the Prometheus text format."""

    def __init__(
        self,
        max_series: int = 10_000,
        stale_after_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.max_series = max_series
        #: Bytes of exposition text all series and families may take together.
        self.max_bytes = max_bytes
        #: Bytes charged now.
        self.used_bytes = 0
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._families: dict[str, _Family] = {}
        self._series = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def _warn(self, what: str, message: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)

    def _family(self, name: str, type_: str, help_: str) -> _Family | None:
        family = self._families.get(name)
        if family is None:
            help_ = help_[:MAX_HELP_CHARS]
            cost = 2 * len(name) + len(help_) + 2 * _LINE_OVERHEAD
            if not self._charge(cost):
                return None
            family = self._families[name] = _Family(name, type_, help_, cost)
        elif family.type != type_:
            self._warn(
                "type:" + name,
                "provtel serve: /metrics: %s is both a %s and a %s; the %s is not exposed",
                name,
                family.type,
                type_,
                type_,
            )
            return None
        return family

    def _charge(self, cost: int) -> bool:
        if self.used_bytes + cost > self.max_bytes:
            self._warn(
                "bytes",
                "provtel serve: /metrics holds %d bytes of series (the limit); new series are "
                "not exposed (PROV keeps everything)",
                self.max_bytes,
            )
            return False
        self.used_bytes += cost
        return True

    def _sample(
        self, family: _Family, labels: tuple[Any, ...], now: float, lines: int = 1
    ) -> _Sample | None:
        sample = family.samples.get(labels)
        if sample is None:
            if self._series >= self.max_series:
                self._warn(
                    "max",
                    "provtel serve: /metrics holds %d series (the limit); new series are not "
                    "exposed (PROV keeps everything)",
                    self.max_series,
                )
                return None
            cost = _series_cost(family.name, labels, lines)
            if not self._charge(cost):
                return None
            sample = family.samples[labels] = _Sample(now, cost)
            self._series += 1
        elif sample.cost < (cost := _series_cost(family.name, labels, lines)):
            if not self._charge(cost - sample.cost):  # a histogram with more buckets now
                return None
            sample.cost = cost
        sample.updated = now
        return sample

    def update(self, request: ExportMetricsServiceRequest) -> None:
        """Take the points of a metrics request."""
        now = self.clock()
        with self._lock:
            for rm in request.resource_metrics:
                resource = _attrs(rm.resource.attributes)
                service = str(resource.get("service.name", "unknown_service"))
                namespace = resource.get("service.namespace")
                job = f"{namespace}/{service}" if namespace else service
                instance = str(resource.get("service.instance.id", ""))
                identity = (("instance", instance), ("job", job))
                info = {
                    k: v
                    for k, v in resource.items()
                    if k not in ("service.name", "service.namespace", "service.instance.id")
                }
                family = self._family("target_info", "gauge", "Target metadata")
                if family is not None:
                    sample = self._sample(family, _labels(info, identity), now)
                    if sample is not None:
                        sample.value = 1
                for sm in rm.scope_metrics:
                    scope = [("otel_scope_name", sm.scope.name)]
                    if sm.scope.version:
                        scope.append(("otel_scope_version", sm.scope.version))
                    for metric in sm.metrics:
                        self._metric(metric, (*identity, *scope), now)

    def _metric(self, metric: Any, extra: tuple[tuple[str, str], ...], now: float) -> None:
        kind = metric.WhichOneof("data")
        if kind not in ("gauge", "sum", "histogram"):
            return
        data = getattr(metric, kind)
        monotonic = kind == "sum" and data.is_monotonic
        delta = kind != "gauge" and data.aggregation_temporality == _AGGREGATION_DELTA
        name = metric_name(metric.name, metric.unit, kind, monotonic)
        if not name:
            return
        type_ = "histogram" if kind == "histogram" else ("counter" if monotonic else "gauge")
        family = self._family(name, type_, metric.description)
        if family is None:
            return
        for point in data.data_points:
            if point.flags & 1:  # no recorded value
                continue
            lines = len(point.explicit_bounds) + 4 if kind == "histogram" else 1
            sample = self._sample(family, _labels(attributes(point.attributes), extra), now, lines)
            if sample is None:
                continue
            if kind == "histogram":
                bounds = tuple(point.explicit_bounds)
                counts = list(point.bucket_counts)
                if len(counts) != len(bounds) + 1:
                    continue
                if delta and sample.bounds == bounds and sample.counts:
                    sample.counts = [a + b for a, b in zip(sample.counts, counts, strict=True)]
                    sample.total += point.sum
                    sample.count += point.count
                else:
                    sample.bounds, sample.counts = bounds, counts
                    sample.total, sample.count = point.sum, point.count
            else:
                which = point.WhichOneof("value")
                value = getattr(point, which) if which else math.nan
                sample.value = sample.value + value if delta else value

    def render(self) -> str:
        """The text exposition of every live series."""
        now = self.clock()
        out: list[str] = []
        with self._lock:
            for family in list(self._families.values()):
                for labels in [
                    k for k, s in family.samples.items() if now - s.updated > self.stale_after_s
                ]:
                    self.used_bytes -= family.samples.pop(labels).cost
                    self._series -= 1
                if not family.samples:
                    del self._families[family.name]
                    self.used_bytes -= family.cost
                    continue
                if family.help:
                    help_ = family.help.replace("\\", "\\\\").replace("\n", "\\n")
                    out.append(f"# HELP {family.name} {help_}")
                out.append(f"# TYPE {family.name} {family.type}")
                for labels, sample in family.samples.items():
                    if family.type == "histogram":
                        self._render_histogram(out, family.name, labels, sample)
                    else:
                        out.append(f"{family.name}{_format(labels)} {_number(sample.value)}")
        return "\n".join(out) + "\n" if out else ""

    @staticmethod
    def _render_histogram(
        out: list[str], name: str, labels: tuple[Any, ...], sample: _Sample
    ) -> None:
        cumulative = 0
        for bound, count in zip(sample.bounds, sample.counts, strict=False):
            cumulative += count
            le = _format((*labels, ("le", _number(float(bound)))))
            out.append(f"{name}_bucket{le} {cumulative}")
        inf = _format((*labels, ("le", "+Inf")))
        out.append(f"{name}_bucket{inf} {sum(sample.counts)}")
        out.append(f"{name}_sum{_format(labels)} {_number(sample.total)}")
        out.append(f"{name}_count{_format(labels)} {sample.count}")


def _format(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""
