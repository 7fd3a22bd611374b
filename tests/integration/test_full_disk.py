"""A disk that fills up during the run: one clear error, training continues, what was written
stays valid and can be recovered."""

from __future__ import annotations

from pathlib import Path

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, provtel_cli, run_instrumented

SCRIPT = Path(__file__).parent / "scripts" / "full_disk.py"


def test_full_disk_keeps_training_and_what_was_written(tmp_path: Path) -> None:
    env = clean_env(OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS="250")
    # Files may grow to 30 kB: a per-step series' spool (16 bytes a step) fills up by the
    # ~1900th of the 3000 steps, the journal later.
    result = run_instrumented(SCRIPT, "30000", cwd=tmp_path, env=env)
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


TORN_SCRIPT = """
import glob, os, resource, signal, sys, time
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1)), batch_size=16
)
for epoch in range(2):
    for x, y in loader:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
time.sleep(1.0)  # the epochs reach the journal (0.5 s batch delay)
# Now the disk fills: the journal may grow by 10 kB more (RLIMIT_FSIZE, as a full disk).
(journal,) = glob.glob("prov/*/journal.jsonl")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = os.path.getsize(journal) + 10_000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
raise RuntimeError("переполнение диска 🔥 " * 5000)  # the run span's line: 300 kB, non-ASCII
"""


def test_a_line_torn_by_a_full_disk_inside_a_character_stays_recoverable(tmp_path: Path) -> None:
    """Issue 12, item 2, in-process: the last line (the run span with a long non-ASCII
    exception message) lands partially when the disk fills; what was journaled before is
    recovered, without a traceback."""
    script = tmp_path / "train.py"
    script.write_text(TORN_SCRIPT, encoding="utf-8")
    result = run_instrumented(script, cwd=tmp_path, env=clean_env())
    assert result.returncode == 1  # the script's own exception, as without provtel
    assert "переполнение диска" in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("provtel:")]
    assert len(errors) == 1 and "File too large" in errors[0], result.stderr[-3000:]

    (run_dir,) = (tmp_path / "prov").iterdir()
    assert (run_dir / "journal.jsonl").read_bytes().endswith(b"\n")  # the torn line was cut
    recovered = provtel_cli("recover", tmp_path / "prov")
    assert recovered.returncode == 0, recovered.stderr
    assert "Traceback" not in recovered.stderr
    doc = assert_valid(run_dir / "prov.json")
    epochs = [a for a in doc["activity"].values() if a.get("prov:type") == "provtel:Epoch"]
    assert len(epochs) == 2
