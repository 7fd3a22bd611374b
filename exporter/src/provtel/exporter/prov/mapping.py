"""The OpenTelemetry -> W3C PROV mapping (ProvML vocabulary). It exists once, here.

``docs/prov-mapping.md`` describes it for users. In short: a span is a ``prov:Activity``, a child
``wasInformedBy`` its parent, a resource is a ``prov:SoftwareAgent`` acting for the OS user,
hyperparameters, datasets, checkpoints and metrics are ``provml:*`` entities.

The mapping runs in two places:

* at ingest, :func:`step_series` takes the per-step arrays off a step-block span (they go to
  series files, never into PROV, where arrays are sets);
* at finalisation, :class:`DocumentBuilder` turns journaled records into PROV records, streaming
  activities straight to the writer and keeping only small indexes (datasets, hyperparameters,
  checkpoints, roots) in memory.
"""

from __future__ import annotations

import logging
import posixpath
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from provtel.exporter.prov.series import MISSING_START, Series, StepRows
from provtel.exporter.prov.values import UniqueNames, iso_time, literal, local_name
from provtel.exporter.prov.writer import ProvJsonWriter
from provtel.semconv import activities as act
from provtel.semconv import attributes as sc
from provtel.semconv import columns, redaction, spans

logger = logging.getLogger(__name__)

NAMESPACE = "https://provtel.org/ns/"
PREFIXES_BASE = {
    "provtel": NAMESPACE + "provtel#",
    "otel": NAMESPACE + "otel#",
    "provml": NAMESPACE + "provml#",
    # yProv4ML's prefix name and base IRI, with the separator its own documents lack.
    "yprov": "https://github.com/HPCI-Lab/yProv4ML#",
    "dcterms": "http://purl.org/dc/terms/",
}

_ACTIVITY_TYPES = {
    act.RUN: "provtel:Run",
    act.EPOCH: "provtel:Epoch",
    act.EVALUATION: "provtel:Evaluation",
    act.STEP_BLOCK: "provtel:StepBlock",
    act.CHECKPOINT: "provtel:Checkpoint",
}
#: ``ml.artifact.kind`` -> entity type (``model`` files are checkpoints, ``provml:Model``).
_ARTIFACT_TYPES = {"dataset": "provml:Dataset", "artifact": "provml:Artifact"}
_STEP_PREFIX = "ml.step."
_HARDWARE_PREFIXES = ("host.", "ml.host.", "ml.hw.")
_HPARAM_PREFIX = "ml.hparam."
#: Attributes that pass the redaction policy again here, for senders that did not apply it: the
#: names under these prefixes are judged, command lines and repository URLs are cleaned.
_JUDGED_PREFIXES = (_HPARAM_PREFIX, "ml.checkpoint.entry.")
_COMMAND_LINE = "process.command_line"  # OpenTelemetry's name; provtel never sets it
_DATASET_KEYS = (
    sc.ML_DATASET_NAME,
    sc.ML_DATASET_CLASS,
    sc.ML_DATASET_PATH,
    sc.ML_DATASET_SIZE,
    sc.ML_DATASET_DIGEST,
)


def prefixes(run_id: str) -> dict[str, str]:
    """Namespaces of a run's document; ``run:`` holds the run's own identifiers."""
    return {"run": f"{NAMESPACE}run/{local_name(run_id)}/", **PREFIXES_BASE}


def _qname(value: str) -> dict[str, str]:
    return {"$": value, "type": "xsd:QName"}


def _redacted(attributes: dict[str, Any]) -> dict[str, Any]:
    """``attributes`` with secrets redacted (:mod:`provtel.semconv.redaction`); copied only when
    something changes."""
    out: dict[str, Any] | None = None
    for key, value in attributes.items():
        if key.startswith(_JUDGED_PREFIXES):
            prefix = next(p for p in _JUDGED_PREFIXES if key.startswith(p))
            new = redaction.redact_value(key[len(prefix) :], value)
        elif key == sc.PROCESS_COMMAND_ARGS and isinstance(value, (list, tuple)):
            new = redaction.redact_argv(value)
        elif key == _COMMAND_LINE and isinstance(value, str):
            new = " ".join(redaction.redact_argv(value.split(" ")))
        elif key == sc.VCS_REPOSITORY_URL_FULL and isinstance(value, str):
            new = redaction.redact_url(value)
        else:
            continue
        if new != value:
            if out is None:
                out = dict(attributes)
            out[key] = new
    return attributes if out is None else out


def _otel_attrs(attributes: dict[str, Any], taken: Iterable[str] = ()) -> dict[str, Any]:
    """``otel:<key>`` for each attribute; a key that collides with one in ``taken`` (the
    exporter's own fields such as ``otel:span_id``) or with another key after sanitising gets a
    ``_2``, ``_3`` ... suffix (O(1) each), so nothing is overwritten."""
    out: dict[str, Any] = {}
    names: UniqueNames | None = None
    for key, value in attributes.items():
        if key.startswith(_HPARAM_PREFIX):
            continue
        name = "otel:" + local_name(key)
        if name in out or name in taken:
            if names is None:  # rare: only documents with colliding keys pay for the index
                names = UniqueNames(limit=None)
                for used in (*taken, *out):
                    names.reserve(used)
            name = names.take(name)
        elif names is not None:
            names.reserve(name)
        out[name] = literal(value)
    return out


# -- ingest: per-step arrays -> series rows ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepSeries:
    """One series taken off one step-block span: its label, context, unit and rows
    (:class:`~provtel.exporter.prov.series.StepRows`, in
    :data:`~provtel.exporter.prov.series.STEP_COLUMNS`: ``step, epoch, value, timestep (ms),
    time_unix_nano``). A block's series share its start times."""

    label: str
    context: str
    unit: str
    rows: StepRows

    @property
    def values(self) -> Sequence[Any]:
        """The value column."""
        return self.rows.values

    @property
    def lines(self) -> list[str]:
        """The CSV rows, without their newlines."""
        if self.rows.lines is not None:
            return self.rows.lines
        return self.rows.text().split("\n")[:-1]


def context_of(attributes: dict[str, Any], default: str = "run") -> str:
    """The ``yprov:context`` of an activity or series."""
    value = attributes.get(sc.ML_CONTEXT)
    return str(value) if value else default


def _number_cell(value: Any) -> str:
    return "" if value is None else str(value)


def log_series(record: dict[str, Any]) -> list[StepSeries]:
    """Remove the table of logged values (``ml.log.*``) from a span record and return one
    series per (name, context), rows in logging order."""
    attrs = record["attributes"]
    if sc.ML_LOG_NAME not in attrs:
        return []
    columns = [attrs.pop(name, None) for name in sc.LOG_COLUMNS]
    names, values, steps, contexts, times = (
        list(c) if isinstance(c, (list, tuple)) else [] for c in columns
    )
    epoch = attrs.get(sc.ML_EPOCH)
    epoch_cell = "" if epoch is None else str(epoch)
    default = context_of(attrs, "training")
    groups: dict[tuple[str, str], tuple[list[Any], list[str]]] = {}
    for i, name in enumerate(names):
        if i >= len(values):
            break
        value = values[i]
        step = steps[i] if i < len(steps) and isinstance(steps[i], int) else -1
        context = contexts[i] if i < len(contexts) and contexts[i] else default
        t = times[i] if i < len(times) and isinstance(times[i], int) else None
        tail = f",{t // 1_000_000},{t}" if t is not None else ",,"
        step_cell = str(step) if step >= 0 else ""
        vals, lines = groups.setdefault((str(name), str(context)), ([], []))
        vals.append(value)
        lines.append(f"{step_cell},{epoch_cell},{_number_cell(value)}{tail}")
    return [
        StepSeries(name, context, "", StepRows(values=vals, lines=lines))
        for (name, context), (vals, lines) in groups.items()
    ]


def step_series(record: dict[str, Any]) -> list[StepSeries]:
    """Remove the per-step arrays (and the logged values, :func:`log_series`) from a span
    record and return them as series rows.

    An array ``ml.step.X`` arrives packed (``ml.step.X.packed``, :mod:`provtel.semconv.columns`:
    decoded straight into an ``array``, no per-element work) or, from older clients, as a plain
    array; when both are there the packed one is used. A packed column that does not decode
    (cut short by an attribute length limit) stays an ordinary attribute, with a warning.
    """
    logged = log_series(record)
    attrs = record["attributes"]
    arrays: dict[str, Any] = {}
    for key, value in attrs.items():
        if not key.startswith(_STEP_PREFIX):
            continue
        if isinstance(value, str):
            name = columns.array_name(key)
            if name is not None and name.startswith(_STEP_PREFIX):
                arrays[name] = key
        elif isinstance(value, (list, tuple)) and key not in arrays:
            arrays[key] = key
    if not arrays:
        return logged
    taken: dict[str, Any] = {}
    for name, key in arrays.items():
        if key == name:
            taken[name] = attrs.pop(key)
            continue
        try:
            taken[name] = columns.decode_array(attrs[key])
        except ValueError as exc:
            _warn_once(key, exc)
            if isinstance(attrs.get(name), (list, tuple)):
                taken[name] = attrs.pop(name)  # the plain twin, if a sender sent both
            continue
        del attrs[key]
        attrs.pop(name, None)  # the plain twin, if a sender sent both
    if not taken:
        return logged
    from provtel.semconv import ATTRIBUTES

    first = attrs.get(sc.ML_STEP_FIRST, 0)
    first = int(first) if isinstance(first, int) and -(2**63) <= first < 2**62 else 0
    epoch = attrs.get(sc.ML_EPOCH)
    epoch_cell = "" if epoch is None else str(epoch)
    starts = _starts(taken.pop(sc.ML_STEP_START, None))
    context = context_of(attrs, "training")
    out = []
    for name, values in taken.items():
        spec = ATTRIBUTES.get(name)
        rows = _step_rows(values, first, epoch_cell, starts)
        out.append(StepSeries(name[len(_STEP_PREFIX) :], context, spec.unit if spec else "", rows))
    return out + logged


_warned: set[str] = set()


def _warn_once(key: str, exc: Exception) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(
            "provtel: %s is not a whole packed column (%s; an attribute value length limit?): "
            "kept as an attribute, no series",
            key,
            exc,
        )


def _starts(values: Any) -> array:
    """The block's start times as int64 (:data:`MISSING_START` where one is not an int)."""
    if isinstance(values, array):
        if values.typecode == "q":
            return values
        return array("q", [MISSING_START]) * len(values)  # floats are not times
    if not isinstance(values, (list, tuple)):
        return array("q")
    try:
        if all(type(v) is int for v in values):
            return array("q", values)
    except OverflowError:
        pass
    return array(
        "q",
        [v if type(v) is int and MISSING_START < v < 2**63 else MISSING_START for v in values],
    )


def _step_rows(values: Any, first: int, epoch: str, starts: array) -> StepRows:
    """A series' rows: columns when the values are all floats or all ints (packed columns
    always are), else formatted rows as before (None as an empty cell, ``str`` of the rest)."""
    if isinstance(values, array):
        return StepRows(values=values, first=first, epoch=epoch, starts=starts)
    values = list(values)
    kinds = set(map(type, values))
    try:
        if kinds <= {float}:
            return StepRows(array("d", values), first, epoch, starts)
        if kinds == {int}:
            return StepRows(array("q", values), first, epoch, starts)
    except OverflowError:
        pass
    lines = []
    for i, v in enumerate(values):
        s = starts[i] if i < len(starts) else MISSING_START
        tail = f",{s // 1_000_000},{s}" if s != MISSING_START else ",,"
        lines.append(f"{first + i},{epoch},{_number_cell(v)}{tail}")
    return StepRows(values=values, lines=lines)


# -- finalisation: records -> PROV ------------------------------------------------------------


@dataclass(slots=True)
class _Checkpoint:
    identifier: str
    generated_at: int | None
    path: str | None
    digest: str | None


class DocumentBuilder:
    """Turn journaled records into PROV records on a :class:`ProvJsonWriter`."""

    def __init__(self, writer: ProvJsonWriter) -> None:
        self.w = writer
        self._agents: dict[str, str] = {}  # resource id -> agent id
        self._ranks: dict[str, Any] = {}  # resource id -> rank of a distributed job
        self._agent_records: dict[str, dict[str, Any]] = {}
        self._persons: set[str] = set()
        self._person_of: dict[str, str] = {}  # resource id -> the person agent
        self._declared: set[str] = set()
        self._span_identity: dict[str, tuple[Any, int, Any]] = {}  # activity -> trace, start, name
        self._parents: dict[str, int] = {}  # referenced parent activity -> first child start
        self._roots: dict[str, list[tuple[str, str | None, int]]] = {}  # trace -> (act, rid, end)
        self._hparams: dict[tuple[str, str], str] = {}  # (name, repr) -> entity id
        self._hparam_values: dict[str, tuple[str, Any]] = {}
        # Entity ids, unique by construction (a suffix never cut away by the length limit).
        self._entity_ids = UniqueNames()
        self._plans: dict[str, dict[str, Any]] = {}  # trace -> plan attributes
        self._datasets: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        self._checkpoints: list[_Checkpoint] = []
        self._previous_checkpoint: dict[str, _Checkpoint] = {}  # trace -> latest
        self._models: dict[str, str] = {}  # trace -> model entity id
        self._model_attrs: dict[str, dict[str, Any]] = {}
        self._specializations: list[tuple[str, str]] = []  # (checkpoint, trace)
        self._artifacts: dict[tuple[str, str], str] = {}  # (path, digest) -> entity id

    # resources -> agents
    def add_resource(self, rid: str, attributes: dict[str, Any]) -> None:
        """Declare the software agent of a resource (and the person it acts for)."""
        if rid in self._agents:
            return  # the same resource in another journal of a merged job
        attributes = _redacted(attributes)
        agent = "run:" + local_name(f"agent_{rid}")
        self._agents[rid] = agent
        if attributes.get(sc.ML_RANK) is not None:
            self._ranks[rid] = literal(attributes[sc.ML_RANK])
        name = attributes.get("service.name", "unknown_service")
        version = attributes.get("service.version")
        label = f"{name} {version}" if version else str(name)
        # Written at the end: the run span may add the hardware it ran on.
        self._agent_records[agent] = {
            "prov:type": _qname("prov:SoftwareAgent"),
            "prov:label": literal(label),
            **_otel_attrs(attributes),
        }
        owner = attributes.get("process.owner")
        if owner:
            person = "run:" + local_name(f"person_{owner!s}")
            if person not in self._persons:
                self._persons.add(person)
                self.w.element(
                    "agent",
                    person,
                    {"prov:type": _qname("prov:Person"), "prov:label": literal(str(owner))},
                )
            self.w.relation("actedOnBehalfOf", {"prov:delegate": agent, "prov:responsible": person})
            self._person_of[rid] = person

    # spans -> activities
    def add_span(self, rec: dict[str, Any], rid: str | None) -> None:
        """Map one span record (step arrays already removed) to PROV records."""
        activity = "run:" + local_name(f"span_{rec['span_id']}")
        identity = (rec.get("trace_id"), int(rec["start"]), rec.get("name"))
        if activity in self._declared:
            if self._span_identity.get(activity, identity) == identity:
                return  # a duplicate delivery of the same span
            # Another span with the same id (ids from a re-seeded generator): keep it, under an
            # id of its own, so the document shows the clash (``provtel validate`` rejects it)
            # instead of silently losing an activity.
            logger.warning("provtel: span id %s is used by two different spans", rec["span_id"])
            n = 2
            while f"{activity}_{n}" in self._declared:
                n += 1
            activity = f"{activity}_{n}"
        self._declared.add(activity)
        self._span_identity[activity] = identity
        attrs: dict[str, Any] = _redacted(rec.get("attributes") or {})
        start, end = int(rec["start"]), int(rec.get("end") or rec["start"])
        kind = attrs.get(sc.ML_ACTIVITY)
        record: dict[str, Any] = {
            "prov:startTime": iso_time(start),
            "prov:endTime": iso_time(end),
            "prov:label": literal(rec.get("name") or "span"),
        }
        if kind in _ACTIVITY_TYPES:
            record["prov:type"] = _ACTIVITY_TYPES[kind]
        if sc.ML_CONTEXT in attrs:
            record["yprov:context"] = literal(str(attrs[sc.ML_CONTEXT]))
        record.update(
            {
                "otel:trace_id": rec["trace_id"],
                "otel:span_id": rec["span_id"],
                "otel:kind": rec.get("kind") or "INTERNAL",
                "otel:status_code": rec.get("status") or "UNSET",
                "otel:start_time_unix_nano": start,
                "otel:end_time_unix_nano": end,
            }
        )
        parent = rec.get("parent_span_id")
        if parent:
            record["otel:parent_span_id"] = parent
        if rid in self._ranks:
            record["provtel:rank"] = self._ranks[rid]
        if rec.get("status_description"):
            record["otel:status_description"] = literal(rec["status_description"])
        scope = rec.get("scope") or {}
        if scope.get("name"):
            record["otel:scope.name"] = literal(scope["name"])
        if scope.get("version"):
            record["otel:scope.version"] = literal(scope["version"])
        record.update(_otel_attrs(attrs, taken=record))
        events = rec.get("events") or []
        for event in events:
            if event.get("name") == "exception":
                for key in (sc.EXCEPTION_TYPE, sc.EXCEPTION_MESSAGE):
                    if key in event.get("attributes", {}):
                        record.setdefault(f"otel:{key}", literal(event["attributes"][key]))
        if events:
            record["otel:events"] = literal(events)
        if rec.get("links"):
            record["otel:links"] = literal(rec["links"])
        self.w.element("activity", activity, record)

        trace = rec["trace_id"]
        if parent:
            informant = "run:" + local_name(f"span_{parent}")
            self.w.relation(
                "wasInformedBy", {"prov:informed": activity, "prov:informant": informant}
            )
            self._parents[informant] = min(start, self._parents.get(informant, start))
        if not parent or rec.get("parent_is_remote"):
            self._roots.setdefault(trace, []).append((activity, rid, end))
        if parent and rec.get("name") == spans.LOG:
            # a batch of the run's configuration on a span of its own (the instrumentation
            # keeps big ones off the run span's attribute limit): the run's hyperparameters
            informant = "run:" + local_name(f"span_{parent}")
            self._add_hyperparameters(informant, trace, attrs, start, is_root=True)
        else:
            self._add_hyperparameters(activity, trace, attrs, start, is_root=not parent)
        self._add_dataset(activity, attrs, start)
        if attrs.get(sc.ML_MODEL_CLASS) or attrs.get(sc.ML_MODEL_NAME):
            self._model_attrs.setdefault(trace, {}).update(
                {k: v for k, v in attrs.items() if k.startswith("ml.model.")}
            )
        if kind == act.CHECKPOINT:
            self._add_checkpoint(activity, trace, attrs, start, end)
        if kind == act.RUN and rid in self._agents:
            # The hardware the run used describes the agent that ran it.
            hardware = {k: v for k, v in attrs.items() if k.startswith(_HARDWARE_PREFIXES)}
            self._agent_records[self._agents[rid]].update(_otel_attrs(hardware))

    def _add_hyperparameters(
        self, activity: str, trace: str, attrs: dict[str, Any], start: int, is_root: bool
    ) -> None:
        for key, value in attrs.items():
            if not key.startswith(_HPARAM_PREFIX):
                continue
            name = key[len(_HPARAM_PREFIX) :]
            identity = (name, repr(value))
            entity = self._hparams.get(identity)
            if entity is None:
                entity = "run:" + self._entity_ids.take(local_name(f"hparam_{name}"))
                self._hparams[identity] = entity
                self._hparam_values[entity] = (name, value)
            self.w.relation(
                "used",
                {"prov:activity": activity, "prov:entity": entity, "prov:time": iso_time(start)},
            )
            if is_root:
                self._plans.setdefault(trace, {})["provml:" + local_name(name)] = literal(value)

    def _add_dataset(self, activity: str, attrs: dict[str, Any], start: int) -> None:
        if not any(k in attrs for k in _DATASET_KEYS):
            return
        identity = tuple(repr(attrs.get(k)) for k in _DATASET_KEYS)
        known = self._datasets.get(identity)
        if known is None:
            label = str(
                attrs.get(sc.ML_DATASET_NAME) or attrs.get(sc.ML_DATASET_CLASS) or "dataset"
            )
            entity = "run:" + self._entity_ids.take(local_name(f"dataset_{label}"))
            record: dict[str, Any] = {"prov:type": "provml:Dataset", "prov:label": literal(label)}
            if attrs.get(sc.ML_DATASET_PATH):
                record["dcterms:identifier"] = literal(str(attrs[sc.ML_DATASET_PATH]))
            record.update(
                _otel_attrs(
                    {k: attrs[k] for k in attrs if k.startswith(("ml.dataset.", "ml.dataloader."))}
                )
            )
            known = self._datasets[identity] = (entity, record)
        self.w.relation(
            "used",
            {"prov:activity": activity, "prov:entity": known[0], "prov:time": iso_time(start)},
        )

    def _add_checkpoint(
        self, activity: str, trace: str, attrs: dict[str, Any], start: int, end: int
    ) -> None:
        path = attrs.get(sc.FILE_PATH)
        digest = attrs.get(sc.ML_CHECKPOINT_DIGEST)
        operation = attrs.get(sc.ML_CHECKPOINT_OPERATION, "save")
        kind = attrs.get(sc.ML_ARTIFACT_KIND, "model")
        if kind != "model":
            self._add_artifact(activity, attrs, path, digest, operation, str(kind), start, end)
            return
        previous = self._previous_checkpoint.get(trace)
        if operation == "load":
            found = next(
                (
                    c
                    for c in reversed(self._checkpoints)
                    if (digest and c.digest == digest) or (path and c.path == path)
                ),
                None,
            )
            if found is None:
                found = self._new_checkpoint(attrs, path, digest, None)
            self.w.relation(
                "used",
                {
                    "prov:activity": activity,
                    "prov:entity": found.identifier,
                    "prov:time": iso_time(start),
                },
            )
            self._previous_checkpoint[trace] = found
            self._specializations.append((found.identifier, trace))
            return
        checkpoint = self._new_checkpoint(attrs, path, digest, end)
        self.w.relation(
            "wasGeneratedBy",
            {
                "prov:entity": checkpoint.identifier,
                "prov:activity": activity,
                "prov:time": iso_time(end),
            },
        )
        # Derivation ordering is strict: only derive from a checkpoint generated earlier.
        if previous is not None and (
            previous.generated_at is None or previous.generated_at // 1000 < end // 1000
        ):
            self.w.relation(
                "wasDerivedFrom",
                {
                    "prov:generatedEntity": checkpoint.identifier,
                    "prov:usedEntity": previous.identifier,
                    "prov:type": _qname("prov:Revision"),
                },
            )
        self._previous_checkpoint[trace] = checkpoint
        self._specializations.append((checkpoint.identifier, trace))

    def _add_artifact(
        self,
        activity: str,
        attrs: dict[str, Any],
        path: Any,
        digest: Any,
        operation: str,
        kind: str,
        start: int,
        end: int,
    ) -> None:
        """A file that is no model (``ml.artifact.kind`` dataset or artifact): an entity
        generated by its save or used by its load, outside the checkpoints' derivation chain."""
        known = self._artifacts.get((str(path), str(digest)))
        if known is None:
            n = len(self._artifacts) + 1
            known = f"run:artifact_{n}"
            self._artifacts[(str(path), str(digest))] = known
            label = posixpath.basename(str(path)) if path else kind
            record: dict[str, Any] = {
                "prov:type": _ARTIFACT_TYPES.get(kind, "provml:Artifact"),
                "prov:label": literal(label),
            }
            if path:
                record["dcterms:identifier"] = literal(str(path))
            record.update(
                _otel_attrs(
                    {
                        k: attrs[k]
                        for k in attrs
                        if k.startswith(("ml.checkpoint.", "ml.artifact.", "file."))
                    }
                )
            )
            self.w.element("entity", known, record)
        if operation == "load":
            self.w.relation(
                "used",
                {"prov:activity": activity, "prov:entity": known, "prov:time": iso_time(start)},
            )
        else:
            self.w.relation(
                "wasGeneratedBy",
                {"prov:entity": known, "prov:activity": activity, "prov:time": iso_time(end)},
            )

    def _new_checkpoint(
        self, attrs: dict[str, Any], path: Any, digest: Any, generated_at: int | None
    ) -> _Checkpoint:
        n = len(self._checkpoints) + 1
        identifier = f"run:checkpoint_{n}"
        label = posixpath.basename(str(path)) if path else "in-memory checkpoint"
        record: dict[str, Any] = {"prov:type": "provml:Model", "prov:label": literal(label)}
        if path:
            record["dcterms:identifier"] = literal(str(path))
        record.update(
            _otel_attrs(
                {
                    k: attrs[k]
                    for k in attrs
                    if k.startswith(("ml.checkpoint.", "ml.artifact.", "file."))
                }
            )
        )
        self.w.element("entity", identifier, record)
        checkpoint = _Checkpoint(
            identifier, generated_at, str(path) if path else None, str(digest) if digest else None
        )
        self._checkpoints.append(checkpoint)
        return checkpoint

    # metric series -> entities
    def finish(self, series: Iterable[Series], incomplete: bool = False) -> None:
        """Write what needed the whole trace: agents' associations, entities, placeholders.

        ``incomplete`` marks a document recovered from the journal of a run that never
        finished: a ``provtel:RecoveredRecord`` entity says so, and the activities that were
        still open are declared as placeholders marked ``provtel:incomplete``.
        """
        for activity, start in self._parents.items():
            if activity not in self._declared:
                # A parent that never arrived (remote, or still running when the process died).
                record: dict[str, Any] = {
                    "prov:label": "span not recorded",
                    "prov:startTime": iso_time(start),
                    "provtel:placeholder": True,
                }
                if incomplete:
                    record["provtel:incomplete"] = True
                self.w.element("activity", activity, record)
                self._declared.add(activity)
        for agent, record in self._agent_records.items():
            self.w.element("agent", agent, record)
        if incomplete:
            self.w.element(
                "entity",
                "run:recovered_record",
                {
                    "prov:type": "provtel:RecoveredRecord",
                    "prov:label": "recovered from journal",
                    "provtel:complete": False,
                    "provtel:recovered_at": iso_time(time.time_ns()),
                },
            )
        plan_of: dict[str, str] = {}
        for trace, attrs in self._plans.items():
            plan = "run:" + local_name(f"plan_{trace}")
            plan_of[trace] = plan
            self.w.element(
                "entity",
                plan,
                {"prov:type": _qname("prov:Plan"), "prov:label": "hyperparameters", **attrs},
            )
        for trace, roots in self._roots.items():
            for activity, rid, _end in roots:
                if rid in self._agents:
                    relation = {"prov:activity": activity, "prov:agent": self._agents[rid]}
                    if trace in plan_of:
                        relation["prov:plan"] = plan_of[trace]
                    self.w.relation("wasAssociatedWith", relation)
                if rid in self._person_of:
                    # The user too, as yProv4ML does: yProv Explorer does not draw
                    # actedOnBehalfOf and would show the person unconnected. Same shape as
                    # the agent's (with its plan): prov's PROV-O round trip merges two
                    # associations of one activity when only one of them is qualified.
                    person = {"prov:activity": activity, "prov:agent": self._person_of[rid]}
                    if trace in plan_of:
                        person["prov:plan"] = plan_of[trace]
                    self.w.relation("wasAssociatedWith", person)
        for entity, (name, value) in self._hparam_values.items():
            self.w.element(
                "entity",
                entity,
                {
                    "prov:type": "provml:HyperParameter",
                    "prov:label": literal(name),
                    "prov:value": literal(value),
                },
            )
        for entity, record in self._datasets.values():
            self.w.element("entity", entity, record)
        for trace, attrs in self._model_attrs.items():
            model = "run:" + local_name(f"model_{trace}")
            self._models[trace] = model
            label = attrs.get(sc.ML_MODEL_NAME) or attrs.get(sc.ML_MODEL_CLASS)
            self.w.element(
                "entity",
                model,
                {
                    "prov:type": "provml:Model",
                    "prov:label": literal(str(label)),
                    **_otel_attrs(attrs),
                },
            )
            # The run used the model it trained (specializationOf, which links it to the
            # checkpoints, is not drawn by yProv Explorer).
            for activity, _rid, _end in self._roots.get(trace, [])[:1]:
                self.w.relation("used", {"prov:activity": activity, "prov:entity": model})
        for checkpoint, trace in dict.fromkeys(self._specializations):
            if trace in self._models:
                self.w.relation(
                    "specializationOf",
                    {"prov:specificEntity": checkpoint, "prov:generalEntity": self._models[trace]},
                )
        self._write_metrics(series)

    def _write_metrics(self, series: Iterable[Series]) -> None:
        only_root = None
        all_roots = [r for roots in self._roots.values() for r in roots]
        if len(all_roots) == 1:
            only_root = all_roots[0]
        metric_ids = UniqueNames(limit=None)
        for s in series:
            base = "run:" + local_name(f"metric_{s.label}")
            if s.context:
                base += "_" + local_name(s.context)
            entity = metric_ids.take(base)
            stats = s.stats
            record: dict[str, Any] = {
                "prov:type": "provml:Metric",
                "prov:label": literal(s.label),
                "yprov:source": literal(s.source),
                "dcterms:identifier": literal(s.relpath),
                "otel:unit": literal(s.unit),
                "provtel:count": stats.count,
            }
            if s.context:
                record["yprov:context"] = literal(s.context)
            if s.resource in self._ranks:
                record["provtel:rank"] = self._ranks[s.resource]
            if s.description:
                record["otel:description"] = literal(s.description)
            if s.attributes:
                record["otel:attributes"] = literal(s.attributes)
            for key, value in (
                ("first", stats.first),
                ("last", stats.last),
                ("min", stats.minimum),
                ("max", stats.maximum),
            ):
                if value is not None:
                    record[f"provtel:{key}"] = literal(value)
            self.w.element("entity", entity, record)
            roots = self._roots.get(s.trace_id or "") or ([only_root] if only_root else [])
            if roots:
                activity, _rid, end = roots[-1]
                self.w.relation(
                    "wasGeneratedBy",
                    {"prov:entity": entity, "prov:activity": activity, "prov:time": iso_time(end)},
                )
            if s.resource in self._agents:
                self.w.relation(
                    "wasAttributedTo",
                    {"prov:entity": entity, "prov:agent": self._agents[s.resource]},
                )
