"""The streaming PROV-JSON writer: small documents (a short run's) and spooled big ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provtel.exporter.prov import writer as writer_module
from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.prov.writer import _BATCH, SPOOL_PREFIX, ProvJsonWriter

PREFIXES = {"run": "https://example.org/provtel/test/"}
TIME = "2026-12-01T12:00:00.000000Z"


def write(path: Path, activities: int) -> Path:
    """A run of ``activities`` step activities, each informed by the run and using its data."""
    w = ProvJsonWriter(path, PREFIXES)
    w.element("agent", "run:user", {"prov:type": "prov:Person"})
    w.element("entity", "run:data", {"prov:label": "data"})
    w.element("activity", "run:run", {"prov:startTime": TIME, "prov:endTime": TIME})
    w.relation("wasAssociatedWith", {"prov:activity": "run:run", "prov:agent": "run:user"})
    for i in range(activities):
        w.element("activity", f"run:step{i}", {"prov:startTime": TIME, "prov:endTime": TIME})
        w.relation("wasInformedBy", {"prov:informed": f"run:step{i}", "prov:informant": "run:run"})
        w.relation("used", {"prov:activity": f"run:step{i}", "prov:entity": "run:data"})
    return w.close()


def test_a_short_runs_document_is_written_without_spool_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under one batch per kind nothing goes through temporary files (a 20-step run's
    # document, written at exit).
    def no_spool(*args: object, **kwargs: object) -> str:
        raise AssertionError("a spool folder was created for a small document")

    monkeypatch.setattr(writer_module.tempfile, "mkdtemp", no_spool)
    document = write(tmp_path / "prov.json", 20)
    prov = assert_valid(document)
    assert len(prov["activity"]) == 21 and set(prov["entity"]) == {"run:data"}
    assert sorted(prov["wasInformedBy"]) == sorted(f"_:i{i}" for i in range(1, 21))
    assert prov["used"]["_:u20"] == {"prov:activity": "run:step19", "prov:entity": "run:data"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prov.json"]


def test_a_big_document_is_spooled_and_stitched(tmp_path: Path) -> None:
    steps = 2 * _BATCH + 5  # several flushed batches of activities and relations
    document = write(tmp_path / "prov.json", steps)
    prov = json.loads(document.read_bytes())
    assert len(prov["activity"]) == steps + 1
    assert len(prov["used"]) == len(prov["wasInformedBy"]) == steps
    assert prov["activity"][f"run:step{steps - 1}"]["prov:endTime"] == TIME
    assert prov["agent"] == {"run:user": {"prov:type": "prov:Person"}}  # never flushed
    assert not list(tmp_path.glob(SPOOL_PREFIX + "*"))
    assert_valid(document, round_trips=False)


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    w = ProvJsonWriter(tmp_path / "prov.json", PREFIXES)
    for i in range(_BATCH + 1):
        w.element("entity", f"run:e{i}", {})
    w.abort()
    assert list(tmp_path.iterdir()) == []
