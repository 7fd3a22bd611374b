"""`provtel validate --yprov`: the rules of yProv Explorer, which reads only top-level elements and
the relations it draws, and calls ``.trim()`` on labels."""

from __future__ import annotations

import json
from pathlib import Path

from provtel.exporter.prov.validate import yprov_problems
from tests.support import provtel_cli

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def _good() -> dict:
    return {
        "prefix": {"run": "https://provtel.org/ns/run/x/"},
        "activity": {"run:train": {"prov:startTime": T0, "prov:endTime": T1, "prov:label": "run"}},
        "agent": {"run:user": {"prov:label": "alice"}},
        "entity": {
            "run:data": {"prov:label": "mnist"},
            "run:model": {"prov:label": "model.pt"},
        },
        "used": {"_:u1": {"prov:activity": "run:train", "prov:entity": "run:data"}},
        "wasGeneratedBy": {"_:g1": {"prov:entity": "run:model", "prov:activity": "run:train"}},
        "wasAssociatedWith": {"_:a1": {"prov:activity": "run:train", "prov:agent": "run:user"}},
    }


def test_a_document_explorer_reads_fully_passes(tmp_path: Path) -> None:
    assert yprov_problems(_good()) == []
    path = tmp_path / "prov.json"
    path.write_text(json.dumps(_good()))
    result = provtel_cli("validate", "--yprov", path)
    assert result.returncode == 0, result.stdout
    assert f"{path}: valid" in result.stdout


def test_what_explorer_cannot_show_is_reported(tmp_path: Path) -> None:
    doc = _good()
    doc["entity"]["run:model"]["prov:label"] = {"$": "model.pt", "type": "xsd:string"}
    doc["entity"]["run:twice"] = [{"prov:label": "a"}, {"prov:label": "b"}]
    doc["agent"]["run:person"] = {"prov:label": "bob"}
    doc["entity"]["run:alone"] = {"prov:label": "nobody links me"}
    doc["actedOnBehalfOf"] = {
        "_:d1": {"prov:delegate": "run:user", "prov:responsible": "run:person"}
    }
    doc["wasAttributedTo"] = {"_:t1": {"prov:entity": "run:data", "prov:agent": "run:elsewhere"}}
    doc["bundle"] = {"run:b": {"entity": {"run:inner": {}}}}
    problems = yprov_problems(doc)
    text = "\n".join(problems)
    assert (
        "entity run:model: prov:label {'$': 'model.pt', 'type': 'xsd:string'} is not a plain"
        in text
    )
    assert "entity run:twice: a JSON array of records" in text
    assert (
        "run:person is linked only through actedOnBehalfOf, which yProv Explorer does not draw"
        in text
    )
    assert "run:alone is linked by no relation: it shows as an isolated node" in text
    assert "wasAttributedTo _:t1: run:elsewhere is not a top-level element" in text
    assert "bundle run:b: its 1 record(s) are not shown by yProv Explorer" in text
    assert len(problems) == 6, problems
    # and the command says so (exit 1); without --yprov these are not problems of PROV itself
    path = tmp_path / "prov.json"
    doc.pop("bundle")
    doc["entity"].pop("run:twice")
    doc["wasAttributedTo"]["_:t1"]["prov:agent"] = "run:user"
    path.write_text(json.dumps(doc))
    strict = provtel_cli("validate", "--yprov", "--quick", path)
    assert strict.returncode == 1
    assert "run:person is linked only through actedOnBehalfOf" in strict.stdout
    assert "shows as an isolated node" in strict.stdout
    plain = provtel_cli("validate", "--quick", path)
    assert "isolated node" not in plain.stdout
