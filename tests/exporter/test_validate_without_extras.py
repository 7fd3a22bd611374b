"""``provtel validate`` after a plain install (no ``[validate]`` extra): what it cannot check is
"not checked", never INVALID (issue 12, item 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from provtel.exporter.prov.store import RunStore, create_run_dir
from provtel.exporter.prov.validate import assert_valid
from tests.exporter.test_journal import span

# The checkers of the extra, made unimportable as in an environment that lacks them.
WITHOUT_EXTRAS = (
    "import sys\n"
    "for name in ('fastjsonschema', 'jsonschema', 'lxml', 'lxml.etree', 'rdflib'):\n"
    "    sys.modules[name] = None\n"
    "from provtel.exporter.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_validate_without_the_optional_checkers_says_not_checked(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "plain"))
    store.add_spans([span(1, parent=None, **{"ml.hparam.lr": 0.1})])
    document = store.finalize()
    assert_valid(document)  # with the checkers: valid

    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, "validate", str(document)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INVALID" not in result.stdout and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{document}: valid"
    notes = [ln for ln in lines[1:] if "not checked: install provtel[validate]" in ln]
    assert any("PROV-JSON schema check" in n for n in notes)
    assert any("PROV-XML round trip" in n for n in notes)

    # A document that is broken is still INVALID without them (lint and prov parse run).
    broken = tmp_path / "broken.json"
    broken.write_text('{"prefix": {}, "activity": {"run:x": {"prov:startTime": "yesterday"}}}')
    bad = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, "validate", str(broken)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and f"{broken}: INVALID" in bad.stdout
