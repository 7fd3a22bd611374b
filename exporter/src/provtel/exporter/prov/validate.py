"""Validate PROV-JSON documents: official schema, the ``prov`` package, round trips, our lint.

The pipeline (steps 1, 2, 3, 5 and 6 of ``reference/prov.md`` §3), run by
:func:`check_file` and its wrappers :func:`validate_file`, :func:`validate_document` and
:func:`assert_valid`:

0. **JSON.** The file must be one JSON object, without duplicate keys in any object (``json``
   would silently keep the last one, hiding an element written twice) and without the
   non-standard constants ``NaN``/``Infinity``.
1. **Schema.** The official PROV-JSON schema (draft-04) shipped in the ``prov`` wheel, patched in
   memory: its root and ``definitions.bundle`` spell the ``wasEndedBy`` key ``wasEndedby``, and
   with ``additionalProperties: false`` any real ``wasEndedBy`` record would fail. Compiled once
   with fastjsonschema, which stops at the first violation, so one schema problem is reported.
2. **prov parse.** ``prov.read(path, format="json")`` then ``doc.unified()`` (PROV-CONSTRAINTS
   key constraints 22-23, impossibilities 53-55). Warnings are errors: every warning raised
   during this step and step 3 is a problem, except rdflib's own ``DeprecationWarning``.
3. **Round trips** (``round_trips=True``), each asserted ``==`` to the parsed document: PROV-N,
   PROV-O Turtle (TriG when the document has bundles), PROV-XML (also validated against the
   ``prov.xsd`` in the wheel), PROV-JSON-LD (also validated against ``prov-jsonld.schema.json``
   in the wheel). See :func:`_same` for the one place ``==`` is not enough (``NaN``). The
   round trips are skipped when the parse or ``unified()`` failed.
5. **Lint** (:func:`lint`), the checks no installable tool makes: references declared, absolute
   namespaces and declared prefixes, QName-safe local names, UTC times, ordering (start <= end,
   usage and generation inside the activity, generation before usage, strict derivation
   ordering), unique generation, entity/activity disjointness, no JSON arrays, plain-string
   labels, unique span ids and an activity tree without cycles.
6. **Big files**: ``prov`` needs ~53 µs and ~2.3 KB per record, and the round trips about 6 s
   per MB. Above :data:`ROUND_TRIP_MAX_BYTES` (5 MiB) the round trips are skipped, above
   :data:`BIG_FILE_BYTES` (20 MiB) the ``prov`` parse too, leaving JSON, schema and lint (about
   15 s per million records). The report's ``notes`` say so, and :func:`validate_file` logs them
   as warnings.

4. **prov 2.0.0** (``round_trips=True``): the yProv service parses uploads with ``prov==2.0.0``,
   which cannot be imported beside ``prov`` 3; when a copy is installed in a directory of its
   own (``make install`` puts one in ``.venv/prov2``; ``PROVTEL_PROV2_PATH`` names another), the
   document is parsed with it in a subprocess. Without that copy the step is skipped and the
   report's ``notes`` say so.

Heavy imports (``prov``, ``lxml``, ``rdflib``, ``fastjsonschema``) happen inside the functions
that need them, so importing this module is cheap. Compiled schemas are cached per process.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Above this size the ``prov`` parse and the round trips are skipped (schema and lint still run):
#: ``prov`` reads ~53 µs and ~2.3 KB per record (``reference/prov.md`` §1.4).
BIG_FILE_BYTES = 20 * 1024 * 1024
#: Above this size the round trips are skipped (the ``prov`` parse still runs). They cost about
#: 6 s per MB, mostly rdflib (PROV-O) and the PROV-N parser: 20 s for a 3 MB document (measured).
ROUND_TRIP_MAX_BYTES = 5 * 1024 * 1024

_SCHEMA_DIR = "tests/schemas"

ELEMENT_KINDS = ("entity", "activity", "agent")

#: Relation kind -> {attribute holding a reference: kind it must denote}. ``None``: any element.
#: ``prov:generation``/``prov:usage`` of a derivation name relation records (checked separately).
REFERENCES: dict[str, dict[str, str | None]] = {
    "wasGeneratedBy": {"prov:entity": "entity", "prov:activity": "activity"},
    "used": {"prov:activity": "activity", "prov:entity": "entity"},
    "wasInformedBy": {"prov:informed": "activity", "prov:informant": "activity"},
    "wasStartedBy": {
        "prov:activity": "activity",
        "prov:trigger": "entity",
        "prov:starter": "activity",
    },
    "wasEndedBy": {"prov:activity": "activity", "prov:trigger": "entity", "prov:ender": "activity"},
    "wasInvalidatedBy": {"prov:entity": "entity", "prov:activity": "activity"},
    "wasDerivedFrom": {
        "prov:generatedEntity": "entity",
        "prov:usedEntity": "entity",
        "prov:activity": "activity",
    },
    "wasAttributedTo": {"prov:entity": "entity", "prov:agent": "agent"},
    "wasAssociatedWith": {
        "prov:activity": "activity",
        "prov:agent": "agent",
        "prov:plan": "entity",
    },
    "actedOnBehalfOf": {
        "prov:delegate": "agent",
        "prov:responsible": "agent",
        "prov:activity": "activity",
    },
    "wasInfluencedBy": {"prov:influencee": None, "prov:influencer": None},
    "specializationOf": {"prov:specificEntity": "entity", "prov:generalEntity": "entity"},
    "alternateOf": {"prov:alternate1": "entity", "prov:alternate2": "entity"},
    "hadMember": {"prov:collection": "entity", "prov:entity": "entity"},
}
#: References PROV-DM requires (the schema requires fewer, e.g. none for ``used``' activity).
REQUIRED: dict[str, tuple[str, ...]] = {
    "wasGeneratedBy": ("prov:entity",),
    "used": ("prov:activity",),
    "wasInformedBy": ("prov:informed", "prov:informant"),
    "wasStartedBy": ("prov:activity",),
    "wasEndedBy": ("prov:activity",),
    "wasInvalidatedBy": ("prov:entity",),
    "wasDerivedFrom": ("prov:generatedEntity", "prov:usedEntity"),
    "wasAttributedTo": ("prov:entity", "prov:agent"),
    "wasAssociatedWith": ("prov:activity",),
    "actedOnBehalfOf": ("prov:delegate", "prov:responsible"),
    "wasInfluencedBy": ("prov:influencee", "prov:influencer"),
    "specializationOf": ("prov:specificEntity", "prov:generalEntity"),
    "alternateOf": ("prov:alternate1", "prov:alternate2"),
    "hadMember": ("prov:collection", "prov:entity"),
}
_TIME_KEYS = ("prov:startTime", "prov:endTime", "prov:time")
_PREDECLARED = frozenset({"prov", "xsd", "_"})  # "_": blank identifiers of relations
_LOCAL = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_ABSOLUTE_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]*[/#]\Z")
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\Z")
_QNAME_TYPES = frozenset({"xsd:QName", "prov:QUALIFIED_NAME"})
_MAX_PER_CHECK = 20  # problems of one kind listed before "... and N more"
#: What a check whose optional checker is not installed says (a note, never a problem).
NOT_CHECKED = "not checked: install provtel[validate]"


@dataclass
class ValidationReport:
    """What :func:`check_file` found."""

    path: Path
    #: Human-readable problems; empty when the document is valid.
    problems: list[str] = field(default_factory=list)
    #: What was not checked and why (big files), never a problem.
    notes: list[str] = field(default_factory=list)
    #: Seconds per step.
    timings: dict[str, float] = field(default_factory=dict)
    #: The parsed JSON object (None when the file is not a JSON object).
    document: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


# -- public API ---------------------------------------------------------------------------------


def validate_file(
    path: str | os.PathLike[str], round_trips: bool = True, yprov: bool = False
) -> list[str]:
    """Run the pipeline on a PROV-JSON file; return its problems (empty when valid).

    Never raises for a bad document (a parse error is a problem); raises
    :class:`FileNotFoundError` for a missing file. Notes (steps skipped for a big file) are
    logged as warnings. ``yprov`` adds the yProv Explorer rules (:func:`yprov_problems`).
    """
    report = check_file(path, round_trips=round_trips, yprov=yprov)
    for note in report.notes:
        logger.warning("%s: %s", report.path, note)
    return report.problems


def validate_document(doc: dict[str, Any], round_trips: bool = True) -> list[str]:
    """Run the pipeline on a PROV-JSON document given as a dict; return its problems."""
    with tempfile.TemporaryDirectory(prefix="provtel-validate-") as tmp:
        path = Path(tmp) / "prov.json"
        try:
            text = json.dumps(doc, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            return [f"not serialisable as JSON: {exc}"]
        path.write_text(text, encoding="utf-8")
        return validate_file(path, round_trips=round_trips)


def assert_valid(
    path: str | os.PathLike[str], round_trips: bool = True, yprov: bool = False
) -> dict[str, Any]:
    """Validate ``path``; raise :class:`AssertionError` listing the problems; return the JSON."""
    report = check_file(path, round_trips=round_trips, yprov=yprov)
    if report.problems:
        listing = "\n".join(f"  - {p}" for p in report.problems)
        raise AssertionError(f"{report.path}: {len(report.problems)} PROV problem(s):\n{listing}")
    assert report.document is not None
    return report.document


def check_file(
    path: str | os.PathLike[str],
    round_trips: bool = True,
    big_file_bytes: int = BIG_FILE_BYTES,
    round_trip_max_bytes: int = ROUND_TRIP_MAX_BYTES,
    yprov: bool = False,
) -> ValidationReport:
    """Run the pipeline on ``path`` and return the full report (problems, notes, timings).

    Files over ``big_file_bytes`` get JSON, schema and lint only; files over
    ``round_trip_max_bytes`` also the ``prov`` parse but no round trips. ``notes`` says what was
    skipped. ``yprov`` adds the yProv Explorer rules (:func:`yprov_problems`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such PROV-JSON file: {path}")
    report = ValidationReport(path)
    size = path.stat().st_size

    with _timed(report, "json"):
        doc = _load_json(path, report.problems)
    if doc is None:
        return report
    report.document = doc

    with _timed(report, "schema"):
        report.problems.extend(
            _guard("PROV-JSON schema check", schema_problems, doc, notes=report.notes)
        )
    with _timed(report, "lint"):
        report.problems.extend(_guard("lint", lint, doc))
    if yprov:
        with _timed(report, "yprov lint"):
            report.problems.extend(_guard("yProv lint", yprov_problems, doc))

    if size > big_file_bytes:
        report.notes.append(
            f"{size / 2**20:.1f} MiB > {big_file_bytes / 2**20:.0f} MiB: skipped the prov parse "
            "and the round trips (JSON, schema and lint only)"
        )
        return report
    if round_trips and size > round_trip_max_bytes:
        round_trips = False
        report.notes.append(
            f"{size / 2**20:.1f} MiB > {round_trip_max_bytes / 2**20:.0f} MiB: skipped the round "
            "trips (JSON, schema, lint and prov parse only)"
        )
    with _timed(report, "prov"):
        report.problems.extend(
            _guard(
                "prov check",
                _prov_problems,
                path,
                round_trips,
                report.timings,
                report.notes,
                notes=report.notes,
            )
        )
    if round_trips:
        prov2 = prov2_path()
        if prov2 is None:
            report.notes.append("no prov 2.0.0 copy (PROVTEL_PROV2_PATH): skipped its parse")
        else:
            with _timed(report, "prov 2.0.0"):
                report.problems.extend(
                    _guard("prov 2.0.0 parse", _prov2_problems, path, prov2, notes=report.notes)
                )
    logger.debug("validated %s in %s", path, report.timings)
    return report


# -- step 4: prov 2.0.0, the yProv upload path --------------------------------------------------

_PROV2_SCRIPT = """
import sys, warnings
import prov, prov.model
if not prov.__version__.startswith("2."):
    sys.exit(f"prov {prov.__version__} found instead of 2.0.0")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    prov.model.ProvDocument.deserialize(sys.argv[1], format="json")
"""


def prov2_path() -> Path | None:
    """The directory holding ``prov`` 2.0.0 (``PROVTEL_PROV2_PATH``, else ``<venv>/prov2``)."""
    import sys

    configured = os.environ.get("PROVTEL_PROV2_PATH")
    candidate = Path(configured) if configured else Path(sys.prefix) / "prov2"
    return candidate if (candidate / "prov" / "__init__.py").is_file() else None


def _prov2_problems(path: Path, prov2: Path) -> list[str]:
    import subprocess
    import sys

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(prov2), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    result = subprocess.run(
        [sys.executable, "-c", _PROV2_SCRIPT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode == 0:
        return []
    tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    return [f"prov 2.0.0 (the yProv upload path) cannot parse the document: {tail}"]


# -- step 0: JSON -------------------------------------------------------------------------------


def _load_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    duplicates.append(key)
                seen.add(key)
        return obj

    def reject_constant(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(), object_pairs_hook=pairs_hook, parse_constant=reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError included
        problems.append(f"not valid JSON: {exc}")
        return None
    if not isinstance(doc, dict):
        problems.append(f"not a PROV-JSON document: the top level is a JSON {type(doc).__name__}")
        return None
    if duplicates:
        problems.extend(
            f"duplicate key {key!r} in a JSON object (JSON readers keep only the last; "
            "an element or attribute written twice)"
            for key in _capped(sorted(set(duplicates)), problems)
        )
    return doc


# -- step 1: schema -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _schema_validator() -> Callable[[Any], Any]:
    from importlib.resources import files

    import fastjsonschema

    schema = json.loads((files("prov") / _SCHEMA_DIR / "prov-json.schema.json").read_text("utf-8"))
    # The official schema misspells wasEndedBy (root and bundle), and both forbid unknown keys.
    for scope in (schema["properties"], schema["definitions"]["bundle"]["properties"]):
        if "wasEndedby" in scope:
            scope.setdefault("wasEndedBy", scope["wasEndedby"])
    validator: Callable[[Any], Any] = fastjsonschema.compile(schema)
    return validator


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """Step 1: the patched official PROV-JSON schema (first violation only)."""
    import fastjsonschema

    try:
        _schema_validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        return [f"PROV-JSON schema: {exc.message}"]
    return []


# -- steps 2 and 3: prov parse and round trips --------------------------------------------------


def _prov_problems(
    path: Path, round_trips: bool, timings: dict[str, float], notes: list[str] | None = None
) -> list[str]:
    import prov
    from prov.serializers import DoNotExist  # prov's "needs the rdf/xml extra"

    problems: list[str] = []
    with _prov_warnings(problems, "prov parse"):
        try:
            document = prov.read(str(path), format="json")
        except Exception as exc:
            problems.append(f"prov parse failed: {type(exc).__name__}: {exc}")
            return problems
        if document is None:
            problems.append("prov parse failed: no document")
            return problems
        try:
            document.unified()
        except Exception as exc:  # ProvUnificationError and the like
            problems.append(f"prov unified() failed: {type(exc).__name__}: {exc}")
            return problems  # the round trips would only repeat it
    if not round_trips:
        return problems
    for name, trip in _ROUND_TRIPS:
        start = time.perf_counter()
        with _prov_warnings(problems, f"{name} round trip"):
            try:
                problems.extend(trip(document))
            except (ImportError, DoNotExist) as exc:  # an optional checker is not installed
                (notes if notes is not None else problems).append(
                    f"{name} round trip {NOT_CHECKED} ({exc})"
                )
            except Exception as exc:
                problems.append(f"{name} round trip failed: {type(exc).__name__}: {exc}")
        timings[f"round trip {name}"] = time.perf_counter() - start
    return problems


def _is_rdflib_deprecation(w: warnings.WarningMessage) -> bool:
    return issubclass(w.category, DeprecationWarning) and (
        "rdflib" in str(w.filename) or "rdflib" in str(w.message)
    )


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def _prov_warnings(problems: list[str], stage: str) -> Iterator[None]:
    """Record every warning raised inside as a problem (rdflib deprecations excepted).

    This is ``warnings.simplefilter("error")`` without its drawback: an error filter aborts the
    parse at the first warning (and a broad ``except`` inside a library could swallow it);
    recording keeps going and reports them all. rdflib reports some problems by logging instead
    (e.g. "... does not look like a valid URI"): its warnings are recorded too.
    """
    rdflib_logger = logging.getLogger("rdflib")
    handler = _LogRecorder()
    propagate = rdflib_logger.propagate
    rdflib_logger.addHandler(handler)
    rdflib_logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("always")
            yield
    finally:
        rdflib_logger.removeHandler(handler)
        rdflib_logger.propagate = propagate
        seen: set[str] = set()
        messages = [
            f"{w.category.__name__}: {w.message}" for w in log if not _is_rdflib_deprecation(w)
        ]
        for message in messages + handler.messages:
            if message not in seen:
                seen.add(message)
                problems.append(f"{stage}: {message}")


def _roundtrip_provn(document: Any) -> list[str]:
    import prov

    text = document.get_provn()
    return _compare("PROV-N", document, prov.read(io.StringIO(text), format="provn"))


def _roundtrip_rdf(document: Any) -> list[str]:
    from prov.model import ProvDocument

    # Turtle cannot carry bundles (named graphs); TriG can.
    rdf_format = "trig" if document.has_bundles() else "turtle"
    text = document.serialize(format="rdf", rdf_format=rdf_format)
    back = ProvDocument.deserialize(content=text, format="rdf", rdf_format=rdf_format)
    return _compare(f"PROV-O {rdf_format}", document, back)


@lru_cache(maxsize=1)
def _xml_schema() -> Any:
    from importlib.resources import as_file, files

    from lxml import etree

    # prov.xsd includes prov-core.xsd ... and xml.xsd by relative path: load it from a real file.
    with as_file(files("prov") / _SCHEMA_DIR / "prov.xsd") as xsd:
        return etree.XMLSchema(etree.parse(str(xsd)))


def _roundtrip_xml(document: Any) -> list[str]:
    from lxml import etree
    from prov.model import ProvDocument

    text = document.serialize(format="xml")
    problems: list[str] = []
    schema = _xml_schema()
    if not schema.validate(etree.fromstring(text.encode("utf-8"))):
        problems.extend(
            f"PROV-XML not valid against prov.xsd: line {e.line}: {e.message}"
            for e in _capped(list(schema.error_log), problems)
        )
    back = ProvDocument.deserialize(content=text, format="xml")
    return problems + _compare("PROV-XML", document, back)


@lru_cache(maxsize=1)
def _jsonld_validator() -> Callable[[Any], Any] | None:
    from importlib.resources import files

    import fastjsonschema

    resource = files("prov") / _SCHEMA_DIR / "prov-jsonld.schema.json"
    if not resource.is_file():
        return None
    # fastjsonschema names the function generated for a definition after the definition's name
    # with non-alphanumerics replaced by "_" and trailing "_" stripped, so "QualifiedName+" and
    # "QualifiedName" get the same function and validation recurses forever (RecursionError).
    # Renaming that one definition fixes it; checked against jsonschema's Draft7Validator on
    # our documents and 400 mutations of them (same verdict on all). jsonschema itself is
    # 12x slower here (13 s for a 3 MB document).
    text = resource.read_text("utf-8").replace('QualifiedName+"', 'QualifiedNamePlus"')
    validator: Callable[[Any], Any] = fastjsonschema.compile(json.loads(text))
    return validator


def _roundtrip_jsonld(document: Any) -> list[str]:
    from prov.model import ProvDocument

    text = document.serialize(format="jsonld")
    problems: list[str] = []
    validator = _jsonld_validator()
    if validator is not None:
        import fastjsonschema

        try:
            validator(json.loads(text))
        except fastjsonschema.JsonSchemaValueException as exc:
            problems.append(
                f"PROV-JSON-LD not valid against prov-jsonld.schema.json: {exc.message}"
            )
    back = ProvDocument.deserialize(content=text, format="jsonld")
    return problems + _compare("PROV-JSON-LD", document, back)


_ROUND_TRIPS: tuple[tuple[str, Callable[[Any], list[str]]], ...] = (
    ("PROV-N", _roundtrip_provn),
    ("PROV-O", _roundtrip_rdf),
    ("PROV-XML", _roundtrip_xml),
    ("PROV-JSON-LD", _roundtrip_jsonld),
)


def _compare(name: str, original: Any, back: Any) -> list[str]:
    if back is None:
        return [f"{name} round trip: nothing read back"]
    if _same(original, back):
        return []
    a, _ = _canonical(original)
    b, _ = _canonical(back)
    lost, gained = sorted(map(_describe, a - b)), sorted(map(_describe, b - a))
    detail = "; ".join([f"lost {r}" for r in lost[:3]] + [f"gained {r}" for r in gained[:3]])
    return [f"{name} round trip changed the document: {detail or 'records differ'}"]


def _same(original: Any, back: Any) -> bool:
    """``original == back`` (``ProvDocument`` equality), except that ``NaN`` equals ``NaN``.

    Why not plain ``==``: ``prov`` compares attribute values with Python ``==``. A non-finite
    float, which our exporter writes as ``{"$": "NaN", "type": "xsd:double"}`` (a diverged loss,
    say), is read back as ``float("nan")``, and ``nan != nan``, so such a document is unequal
    even to itself re-read from the same PROV-JSON: an artefact of the comparison, not a loss in
    any serialisation (prov 3.2.3, measured). Worse, when the record sets differ ``==`` falls
    back to comparing every record with every other, O(n²).

    So we first compare canonical forms, in O(n): per record its bundle, type, identifier and
    the set of ``(name, type(value), value)`` attribute triples, exactly what ``prov`` hashes and
    compares, with every NaN replaced by one token and relations' identifiers left out (``prov``
    lets a relation without identifier equal one with). That form is never stricter than
    ``==``, so a difference there is a real one. If the forms agree, documents without NaN must
    also pass ``prov``'s own ``==``; documents with NaN are compared by the canonical form only.
    """
    a, a_has_nan = _canonical(original)
    b, b_has_nan = _canonical(back)
    if a != b:
        return False
    return a_has_nan or b_has_nan or bool(original == back)


def _canonical(document: Any) -> tuple[Counter[tuple[Any, ...]], bool]:
    """The records of ``document`` as a multiset of comparable keys, and whether it has NaN."""
    out: Counter[tuple[Any, ...]] = Counter()
    has_nan = False
    for bundle_id, record in _records(document):
        attributes = []
        for name, value in record.attributes:
            if isinstance(value, float) and math.isnan(value):
                has_nan = True
                value = _NAN
            attributes.append((name, type(value), value))
        identifier = record.identifier if record.is_element() else None
        out[(bundle_id, record.get_type(), identifier, frozenset(attributes))] += 1
    return out, has_nan


_NAN = ("xsd:double", "NaN")


def _records(document: Any) -> Iterator[tuple[Any, Any]]:
    for record in document.get_records():
        yield None, record
    for bundle in document.bundles:
        for record in bundle.get_records():
            yield bundle.identifier, record


def _describe(key: tuple[Any, ...]) -> str:
    bundle, kind, identifier, attributes = key
    pairs = sorted((str(name), value) for name, _, value in attributes)
    text = ", ".join(f"{name}={value!r}" for name, value in pairs)
    where = f" in bundle {bundle}" if bundle is not None else ""
    return f"{str(kind).split(':')[-1]} {identifier or ''}[{text[:200]}]{where}"


# -- step 5: lint -------------------------------------------------------------------------------


def _time(record: dict[str, Any], key: str, at: str, p: list[str]) -> datetime | None:
    """``record[key]`` as a datetime; it must be xsd:dateTime in UTC with ``Z``."""
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _UTC_TIME.match(value):
        p.append(f"{at}: {key} {value!r} is not a UTC time with 'Z' (YYYY-MM-DDThh:mm:ss[.f]Z)")
        return None
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        p.append(f"{at}: {key} {value!r} is not a valid date and time")
        return None


def lint(doc: dict[str, Any]) -> list[str]:
    """Step 5: our own checks on a PROV-JSON dict (also valid for documents ``prov`` accepts).

    References declared, namespaces absolute IRIs ending in ``/`` or ``#``, prefixes declared,
    local names QName-safe, times UTC with ``Z``, activity start <= end, usage and generation
    inside the activity's interval, an entity generated at most once, generation before usage,
    strict derivation-generation-generation ordering, no id both entity and activity, no JSON arrays
    (PROV-JSON arrays are sets), ``prov:label`` a plain string, span ids (``otel:span_id``)
    unique and no cycle in the activity tree (``wasInformedBy``).
    """
    p: list[str] = []
    scopes = list(_scopes(doc, p))
    declared: dict[str, set[str]] = {kind: set() for kind in ELEMENT_KINDS}
    relation_ids: dict[str, set[str]] = {kind: set() for kind in REFERENCES}
    for scope, _prefixes, _where in scopes:
        for kind in ELEMENT_KINDS:
            declared[kind].update(_table(scope, kind))
        for kind in REFERENCES:
            relation_ids[kind].update(_table(scope, kind))
        if isinstance(scope.get("bundle"), dict):
            declared["entity"].update(scope["bundle"])  # a bundle is an entity
    everything = declared["entity"] | declared["activity"] | declared["agent"]

    for both in sorted(declared["entity"] & declared["activity"]):
        p.append(f"{both} is both an entity and an activity (entity-activity disjointness)")

    intervals: dict[str, tuple[datetime | None, datetime | None]] = {}
    generations: dict[str, list[tuple[str, datetime | None]]] = {}
    events: list[tuple[str, Any, datetime]] = []  # usage/generation: (where, activity, time)
    usages: list[tuple[str, str, datetime]] = []  # (where, entity, time)
    for scope, prefixes, where in scopes:
        for kind in (*ELEMENT_KINDS, *REFERENCES):
            for rid, record in _table(scope, kind).items():
                at = f"{where}{kind} {rid}"
                if isinstance(record, list):
                    p.append(f"{at}: several records under one id (a JSON array; write it once)")
                    continue
                if not isinstance(record, dict):
                    p.append(f"{at}: the record is a JSON {type(record).__name__}, not an object")
                    continue
                if kind in ELEMENT_KINDS or not rid.startswith("_:"):
                    _check_qname(rid, f"{at}: identifier", prefixes, p)
                _check_attributes(record, at, prefixes, p)
                if kind == "activity":
                    t0 = _time(record, "prov:startTime", at, p)
                    t1 = _time(record, "prov:endTime", at, p)
                    if t0 and t1 and t1 < t0:
                        p.append(
                            f"{at}: prov:endTime {record['prov:endTime']} is before "
                            f"prov:startTime {record['prov:startTime']}"
                        )
                    intervals[rid] = (t0, t1)
                elif kind in REFERENCES:
                    _check_references(kind, record, at, everything, declared, relation_ids, p)
                    when = _time(record, "prov:time", at, p)
                    if kind == "wasGeneratedBy" and isinstance(record.get("prov:entity"), str):
                        generations.setdefault(record["prov:entity"], []).append((rid, when))
                    if kind in ("wasGeneratedBy", "used") and when is not None:
                        events.append((at, record.get("prov:activity"), when))
                        if kind == "used" and isinstance(record.get("prov:entity"), str):
                            usages.append((at, record["prov:entity"], when))

    for at, activity, when in events:
        t0, t1 = (
            intervals.get(activity, (None, None)) if isinstance(activity, str) else (None, None)
        )
        if (t0 and when < t0) or (t1 and when > t1):
            p.append(
                f"{at}: prov:time {_iso(when)} is outside activity {activity}'s interval "
                f"[{_iso(t0)}, {_iso(t1)}]"
            )
    for entity, gens in sorted(generations.items()):
        if len(gens) > 1:
            ids = ", ".join(rid for rid, _ in gens)
            p.append(f"entity {entity} is generated {len(gens)} times ({ids}): unique generation")
    gen_time = {e: gens[0][1] for e, gens in generations.items() if len(gens) == 1}
    for at, entity, when in usages:
        generated = gen_time.get(entity)
        if generated and when < generated:
            p.append(
                f"{at}: {entity} is used at {_iso(when)}, before it is generated at "
                f"{_iso(generated)} (generation-precedes-usage)"
            )
    for scope, _prefixes, where in scopes:
        for rid, record in _table(scope, "wasDerivedFrom").items():
            if not isinstance(record, dict):
                continue
            e2, e1 = record.get("prov:generatedEntity"), record.get("prov:usedEntity")
            t2 = gen_time.get(e2) if isinstance(e2, str) else None
            t1 = gen_time.get(e1) if isinstance(e1, str) else None
            if t1 and t2 and not t1 < t2:
                p.append(
                    f"{where}wasDerivedFrom {rid}: {e2} generated at {_iso(t2)} is not strictly "
                    f"after {e1} generated at {_iso(t1)} "
                    "(derivation-generation-generation ordering)"
                )
    _check_span_tree(scopes, p)
    return p


def _check_span_tree(
    scopes: list[tuple[dict[str, Any], dict[str, str], str]], p: list[str]
) -> None:
    """Span ids unique, and the activity tree (``wasInformedBy``, child to parent) acyclic.

    A repeated span id means spans were lost or merged (ids drawn from a re-seeded generator);
    a cycle means no activity of it can be the root of its run. Both make the document's tree
    untrustworthy, so they are problems, not notes.
    """
    by_span: dict[str, list[str]] = {}
    informants: dict[str, list[str]] = {}
    for scope, _prefixes, where in scopes:
        for aid, record in _table(scope, "activity").items():
            if isinstance(record, dict) and isinstance(record.get("otel:span_id"), str):
                by_span.setdefault(record["otel:span_id"], []).append(f"{where}{aid}")
        for record in _table(scope, "wasInformedBy").values():
            if isinstance(record, dict):
                informed, informant = record.get("prov:informed"), record.get("prov:informant")
                if isinstance(informed, str) and isinstance(informant, str):
                    informants.setdefault(informed, []).append(informant)
    duplicates = [(span, ids) for span, ids in sorted(by_span.items()) if len(ids) > 1]
    for span, ids in _capped(duplicates, p):
        p.append(
            f"span id {span} is used by {len(ids)} activities ({', '.join(ids)}): "
            "span ids must be unique"
        )
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(informants):
        if start in state:
            continue
        state[start] = 1
        path = [start]
        stack: list[Iterator[str]] = [iter(informants[start])]
        while stack:  # iterative depth-first search: trees may be deep
            parent = next(stack[-1], None)
            if parent is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(parent) == 1:
                cycles.append([*path[path.index(parent) :], parent])
            elif parent not in state:
                state[parent] = 1
                path.append(parent)
                stack.append(iter(informants.get(parent, ())))
    for cycle in _capped(cycles, p):
        p.append(
            f"activities {' -> '.join(cycle)} form a cycle of wasInformedBy "
            "(an activity is its own ancestor in the activity tree)"
        )


def _iso(t: datetime | None) -> str:
    return "-" if t is None else t.isoformat().replace("+00:00", "Z")


def _table(scope: dict[str, Any], kind: str) -> dict[str, Any]:
    table = scope.get(kind)
    return table if isinstance(table, dict) else {}


def _scopes(
    doc: dict[str, Any], p: list[str]
) -> Iterator[tuple[dict[str, Any], dict[str, str], str]]:
    """The document and its bundles, each with the prefixes in force and a location label."""
    top = _check_prefixes(doc.get("prefix"), "", p)
    yield doc, top, ""
    bundles = doc.get("bundle")
    if isinstance(bundles, dict):
        for bid, bundle in bundles.items():
            if isinstance(bundle, dict):
                where = f"bundle {bid}: "
                _check_qname(bid, f"{where}identifier", top, p)
                yield bundle, {**top, **_check_prefixes(bundle.get("prefix"), where, p)}, where


def _check_prefixes(prefix: Any, where: str, p: list[str]) -> dict[str, str]:
    if prefix is None:
        return {}
    if not isinstance(prefix, dict):
        p.append(f"{where}prefix: not a JSON object")
        return {}
    out: dict[str, str] = {}
    for name, iri in prefix.items():
        if name != "default" and not _PREFIX.match(name):
            p.append(f"{where}prefix {name!r}: not a valid prefix name")
        if not isinstance(iri, str) or not _ABSOLUTE_IRI.match(iri):
            p.append(
                f"{where}prefix {name!r}: namespace {iri!r} is not an absolute IRI ending in "
                "'/' or '#' (relative namespace)"
            )
        out[name] = str(iri)
    return out


def _check_qname(qname: Any, where: str, prefixes: dict[str, str], p: list[str]) -> None:
    if not isinstance(qname, str):
        p.append(f"{where}: {qname!r} is not a string")
        return
    prefix, sep, local = qname.partition(":")
    if not sep:
        prefix, local = "default", qname
    if prefix not in prefixes and prefix not in _PREDECLARED:
        p.append(f"{where}: prefix {prefix!r} of {qname!r} is not declared")
    if not _LOCAL.match(local):
        p.append(
            f"{where}: local name {local!r} of {qname!r} is not QName-safe "
            "([A-Za-z_][A-Za-z0-9_.-]*)"
        )


def _check_attributes(
    record: dict[str, Any], at: str, prefixes: dict[str, str], p: list[str]
) -> None:
    for key, value in record.items():
        _check_qname(key, f"{at}: attribute", prefixes, p)
        if isinstance(value, list):
            p.append(
                f"{at}: {key} is a JSON array {str(value)[:80]} (a set in PROV-JSON: order and "
                "duplicates are lost; write one value)"
            )
            continue
        if key == "prov:label" and not isinstance(value, str):
            p.append(f"{at}: prov:label {value!r} is not a plain string")
        if isinstance(value, dict):
            vtype = value.get("type")
            lexical = value.get("$")
            if vtype in _QNAME_TYPES:
                _check_qname(lexical, f"{at}: {key} QName value", prefixes, p)
            elif vtype == "xsd:dateTime":
                _time(value, "$", f"{at}: {key}", p)
            if isinstance(vtype, str) and ":" in vtype:
                _check_qname(vtype, f"{at}: {key} datatype", prefixes, p)
        elif key in _TIME_KEYS:
            pass  # parsed (and checked for UTC) by the caller
        elif isinstance(value, float) and not math.isfinite(value):
            p.append(f"{at}: {key} is a non-finite JSON number (write a typed xsd:double)")


def _check_references(
    kind: str,
    record: dict[str, Any],
    at: str,
    everything: set[str],
    declared: dict[str, set[str]],
    relation_ids: dict[str, set[str]],
    p: list[str],
) -> None:
    for key in REQUIRED[kind]:
        if key not in record:
            p.append(f"{at}: required {key} is missing")
    for key, expected in REFERENCES[kind].items():
        ref = record.get(key)
        if ref is None:
            continue
        if not isinstance(ref, str):
            p.append(f"{at}: {key} {ref!r} is not an identifier")
        elif ref not in everything:
            p.append(f"{at}: {key} {ref} is not declared as an entity, activity or agent")
        elif (
            expected == "activity" and ref in declared["entity"] and ref not in declared["activity"]
        ):
            p.append(
                f"{at}: {key} {ref} is an entity used as an activity (entity-activity disjointness)"
            )
        elif expected == "entity" and ref in declared["activity"] and ref not in declared["entity"]:
            p.append(
                f"{at}: {key} {ref} is an activity used as an entity (entity-activity disjointness)"
            )
    if kind == "wasDerivedFrom":
        for key, target in (("prov:generation", "wasGeneratedBy"), ("prov:usage", "used")):
            ref = record.get(key)
            if ref is not None and ref not in relation_ids[target]:
                p.append(f"{at}: {key} {ref!r} is not the id of a {target} record")


# -- helpers ------------------------------------------------------------------------------------


@contextmanager
def _timed(report: ValidationReport, step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        report.timings[step] = time.perf_counter() - start


def _guard(
    stage: str, fn: Callable[..., list[str]], *args: Any, notes: list[str] | None = None
) -> list[str]:
    """Run a step; an unexpected exception is a problem, never an escape. A missing optional
    checker (``ImportError``) is a note in ``notes`` -- the step was not checked -- never a
    verdict on the document."""
    try:
        return fn(*args)
    except ImportError as exc:
        if notes is None:
            raise
        notes.append(f"{stage} {NOT_CHECKED} ({exc})")
        return []
    except Exception as exc:
        logger.debug("%s crashed", stage, exc_info=True)
        return [f"{stage} could not complete: {type(exc).__name__}: {exc}"]


def _capped(items: list[Any], problems: list[str]) -> list[Any]:
    if len(items) > _MAX_PER_CHECK:
        problems.append(f"... and {len(items) - _MAX_PER_CHECK} more like the following")
        return items[:_MAX_PER_CHECK]
    return items


# -- the yProv lint (``provtel validate --yprov``) ----------------------------------------------

#: Relations yProv Explorer draws, with the attributes it takes as the two ends (``prov:plan`` of
#: an association and the activity of a derivation are drawn as extra edges).
YPROV_DRAWN: dict[str, tuple[tuple[str, str], ...]] = {
    "used": (("prov:activity", "prov:entity"),),
    "wasGeneratedBy": (("prov:entity", "prov:activity"),),
    "wasDerivedFrom": (
        ("prov:generatedEntity", "prov:usedEntity"),
        ("prov:generatedEntity", "prov:activity"),
        ("prov:activity", "prov:usedEntity"),
    ),
    "wasInformedBy": (("prov:informant", "prov:informed"),),
    "hadMember": (("prov:collection", "prov:entity"),),
    "wasStartedBy": (("prov:activity", "prov:trigger"),),
    "wasAssociatedWith": (("prov:activity", "prov:agent"), ("prov:activity", "prov:plan")),
    "wasAttributedTo": (("prov:entity", "prov:agent"),),
}


def yprov_problems(doc: dict[str, Any]) -> list[str]:
    """What yProv Explorer would not show of ``doc`` (the rules of ``provtel validate --yprov``).

    yProv Explorer reads only the top-level ``entity``, ``activity`` and ``agent`` records and
    the relations in :data:`YPROV_DRAWN`, draws an edge only between declared top-level
    elements, and calls ``.trim()`` on ``prov:label``. So: no records inside bundles, no JSON
    arrays of records, ``prov:label`` a plain string, every end of a drawn relation a declared
    top-level element, and every element reachable through a drawn relation (an element
    linked only by relations it ignores, such as ``actedOnBehalfOf`` or ``specializationOf``,
    shows as an isolated node).
    """
    p: list[str] = []
    bundles = doc.get("bundle")
    if isinstance(bundles, dict):
        for bid, bundle in bundles.items():
            if not isinstance(bundle, dict):
                continue
            count = sum(len(_table(bundle, k)) for k in bundle if k != "prefix")
            if count:
                p.append(
                    f"bundle {bid}: its {count} record(s) are not shown by yProv Explorer "
                    "(it reads only top-level records)"
                )
    nodes: set[str] = set()
    unreadable: set[str] = set()  # reported already: not also "isolated"
    for kind in ELEMENT_KINDS:
        for eid, record in _table(doc, kind).items():
            nodes.add(eid)
            if isinstance(record, list):
                unreadable.add(eid)
                p.append(
                    f"{kind} {eid}: a JSON array of records; yProv Explorer reads only one of them"
                )
                continue
            label = record.get("prov:label") if isinstance(record, dict) else None
            if label is not None and not isinstance(label, str):
                p.append(
                    f"{kind} {eid}: prov:label {label!r} is not a plain string (yProv Explorer "
                    "calls .trim() on it and fails)"
                )
    linked: set[str] = set()
    hidden: dict[str, set[str]] = {}  # element -> relation kinds Explorer ignores that link it
    for kind in REFERENCES:
        for rid, record in _table(doc, kind).items():
            if isinstance(record, list):
                p.append(f"{kind} {rid}: a JSON array of relations; yProv Explorer drops them")
                continue
            if not isinstance(record, dict):
                continue
            pairs = YPROV_DRAWN.get(kind)
            if pairs is None:
                for key in REFERENCES[kind]:
                    ref = record.get(key)
                    if isinstance(ref, str):
                        hidden.setdefault(ref, set()).add(kind)
                continue
            for source_key, target_key in pairs:
                source, target = record.get(source_key), record.get(target_key)
                if source is None or target is None:
                    continue
                missing = [r for r in (source, target) if not isinstance(r, str) or r not in nodes]
                if missing:
                    if (source_key, target_key) == pairs[0]:
                        p.append(
                            f"{kind} {rid}: {', '.join(map(str, missing))} is not a top-level "
                            "element; yProv Explorer drops the edge"
                        )
                    continue
                linked.update((source, target))
    if len(nodes) > 1:
        for eid in sorted(nodes - linked - unreadable):
            via = hidden.get(eid)
            how = (
                f"only through {', '.join(sorted(via))}, which yProv Explorer does not draw"
                if via
                else "by no relation"
            )
            p.append(f"{eid} is linked {how}: it shows as an isolated node")
    return p
