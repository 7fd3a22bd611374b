"""Names longer than an identifier may be: an unmodified script with two datasets whose roots
share their first 110+ characters ends, with a document (issue 12, item 1)."""

from __future__ import annotations

from pathlib import Path

from provtel.exporter.prov.validate import assert_valid
from tests.support import clean_env, run_documents, run_instrumented

SCRIPT = """
import sys
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

class Images(Dataset):
    def __init__(self, root, n):
        self.root = root  # what torchvision datasets keep
        self.x, self.y = torch.randn(n, 4), torch.randn(n, 1)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i], self.y[i]

shared = sys.argv[1]
train = DataLoader(Images(shared + "_train", 32), batch_size=8)
val = DataLoader(Images(shared + "_validation", 16), batch_size=8)
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in train:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        for x, y in val:
            model(x)
print("trained", flush=True)
"""


def test_two_datasets_whose_roots_share_115_characters(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT, encoding="utf-8")
    shared = str(tmp_path / "data" / ("imagenet_subset_2024_" * 6)[:115])
    result = run_instrumented(script, shared, cwd=tmp_path, env=clean_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "trained\n"
    (document,) = run_documents(tmp_path / "prov")
    doc = assert_valid(document)
    datasets = {
        e["dcterms:identifier"]: k
        for k, e in doc["entity"].items()
        if e["prov:type"] == "provml:Dataset"
    }
    assert set(datasets) == {shared + "_train", shared + "_validation"}
    assert len(set(datasets.values())) == 2  # two entities, distinct ids, both bounded
    assert all(len(k) <= len("run:") + 120 for k in datasets.values())
