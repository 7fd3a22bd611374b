"""A disk that fills up during the run: one clear error, training continues, what was written
stays valid and can be recovered."""

from __future__ import annotations

from pathlib import Path

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, provtel_cli, run_instrumented

SCRIPT = Path(__file__).parent / "scripts" / "full_disk.py"


def test_full_disk_keeps_training_and_what_was_written(tmp_path: Path) -> None:
    env = clean_env(OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS="250")
    result = run_instrumented(SCRIPT, "60000", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "trained\n"
    errors = [line for line in result.stderr.splitlines() if "provtel" in line]
    assert len(errors) == 1, result.stderr
    assert "File too large" in errors[0] and "the run continues" in errors[0]

    (run_dir,) = (tmp_path / "prov").iterdir()
    assert not (run_dir / "prov.json").exists()  # the document could not be written
    recovered = provtel_cli("recover", run_dir)
    assert recovered.returncode == 0, recovered.stderr
    doc = assert_valid(run_dir / "prov.json")
    blocks = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:StepBlock"]
    assert blocks, "the blocks journaled before the disk filled are kept"
    (loss,) = [
        e
        for e in doc["entity"].values()
        if e["prov:type"] == "provml:Metric" and e["prov:label"] == "loss"
    ]
    assert 0 < loss["provtel:count"] < 3000
