"""A streaming PROV-JSON writer: flat memory, one pass, atomic result.

Records arrive in any order; each record kind (``entity``, ``activity``, ``used`` ...) is spooled
to its own temporary file in batches serialised with orjson, and :meth:`ProvJsonWriter.close`
stitches the spools into one PROV-JSON object and renames it into place. Memory holds at most one
batch per kind. A kind that never fills a batch (every kind of a short run's document) never
gets a file: it is written from memory at close, so a small document costs no temporary files.
The caller guarantees that each element id is written once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import orjson

from provtel.exporter.prov.files import open_private

#: Record kinds in the order they appear in the document.
ELEMENT_KINDS = ("entity", "activity", "agent")
RELATION_KINDS = (
    "wasGeneratedBy",
    "used",
    "wasInformedBy",
    "wasStartedBy",
    "wasEndedBy",
    "wasInvalidatedBy",
    "wasDerivedFrom",
    "wasAttributedTo",
    "wasAssociatedWith",
    "actedOnBehalfOf",
    "wasInfluencedBy",
    "specializationOf",
    "alternateOf",
    "hadMember",
)
# Blank ids are unique across the document: each relation kind has its own prefix.
_BLANK_PREFIX = {
    "wasGeneratedBy": "_:g",
    "used": "_:u",
    "wasInformedBy": "_:i",
    "wasStartedBy": "_:s",
    "wasEndedBy": "_:e",
    "wasInvalidatedBy": "_:inv",
    "wasDerivedFrom": "_:d",
    "wasAttributedTo": "_:at",
    "wasAssociatedWith": "_:as",
    "actedOnBehalfOf": "_:del",
    "wasInfluencedBy": "_:inf",
    "specializationOf": "_:spec",
    "alternateOf": "_:alt",
    "hadMember": "_:mem",
}

_BATCH = 1024
#: Name prefix of the spool folder beside a document being written (a killed writer leaves it;
#: :func:`provtel.exporter.prov.store.clean_stale` removes it).
SPOOL_PREFIX = ".prov-spool-"


class _Spool:
    __slots__ = ("batch", "count", "file")

    def __init__(self) -> None:
        self.file: IO[bytes] | None = None  # opened when the first batch is full
        self.batch: dict[str, Any] = {}
        self.count = 0

    def flush(self, out: IO[bytes]) -> None:
        """Append the batch to ``out`` (the spool file, or the document at close)."""
        if not self.batch:
            return
        body = orjson.dumps(self.batch)[1:-1]  # drop the braces: "id":{...},"id":{...}
        if self.count:
            out.write(b",")
        out.write(body)
        self.count += len(self.batch)
        self.batch = {}


class ProvJsonWriter:
    """Write one PROV-JSON document to ``path`` record by record."""

    def __init__(self, path: str | os.PathLike[str], prefixes: dict[str, str]) -> None:
        self.path = Path(path)
        self.prefixes = dict(prefixes)
        self._spool_dir: Path | None = None  # created with the first spool file
        self._spools: dict[str, _Spool] = {}
        self._blank = dict.fromkeys(RELATION_KINDS, 0)
        self.records = 0

    def _spill(self, kind: str, spool: _Spool) -> None:
        """Move a full batch to the kind's spool file."""
        if spool.file is None:
            if self._spool_dir is None:
                self._spool_dir = Path(tempfile.mkdtemp(prefix=SPOOL_PREFIX, dir=self.path.parent))
            spool.file = open(self._spool_dir / kind, "wb")  # noqa: SIM115 closed in close()
        spool.flush(spool.file)

    def element(self, kind: str, identifier: str, attributes: dict[str, Any]) -> None:
        """Add an ``entity``, ``activity`` or ``agent`` with its attributes."""
        spool = self._spools.get(kind)
        if spool is None:
            spool = self._spools[kind] = _Spool()
        spool.batch[identifier] = attributes
        self.records += 1
        if len(spool.batch) >= _BATCH:
            self._spill(kind, spool)

    def relation(self, kind: str, attributes: dict[str, Any]) -> str:
        """Add a relation record (``used``, ``wasInformedBy`` ...) and return its blank id."""
        self._blank[kind] += 1
        identifier = f"{_BLANK_PREFIX[kind]}{self._blank[kind]}"
        self.element(kind, identifier, attributes)
        return identifier

    def close(self) -> Path:
        """Write the document and atomically move it to ``path``; return the path."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as out:
                out.write(b'{"prefix":' + orjson.dumps(self.prefixes))
                for kind in (*ELEMENT_KINDS, *RELATION_KINDS):
                    spool = self._spools.get(kind)
                    if spool is None:
                        continue
                    out.write(b',"' + kind.encode() + b'":{')
                    if spool.file is not None:
                        assert self._spool_dir is not None
                        spool.flush(spool.file)
                        spool.file.close()
                        with open(self._spool_dir / kind, "rb") as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    else:  # never filled a batch: straight from memory
                        spool.flush(out)
                    out.write(b"}")
                out.write(b"}\n")
            os.replace(tmp, self.path)
        finally:
            self.abort()
            tmp.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop the spools without writing a document."""
        for spool in self._spools.values():
            if spool.file is not None and not spool.file.closed:
                spool.file.close()
        self._spools.clear()
        if self._spool_dir is not None:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            self._spool_dir = None
