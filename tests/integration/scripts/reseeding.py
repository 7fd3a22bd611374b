"""A script that re-seeds Python's ``random`` before every epoch and before every checkpoint
save (per-epoch augmentation seeds, the way ``seed_everything`` is called), and once before the
first span: ``random.seed(42)`` must not decide any trace or span id."""

from __future__ import annotations

import json
import random
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
random.seed(42)
torch.manual_seed(0)
data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
saves = []
for epoch in range(EPOCHS):
    random.seed(0)
    for x, y in DataLoader(data, batch_size=8):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    random.seed(0)
    path = f"checkpoint_{epoch}.pt"
    torch.save({"epoch": epoch, "model": model.state_dict()}, path)
    saves.append(path)
with open("result.json", "w", encoding="utf-8") as f:
    json.dump({"epochs": EPOCHS, "saves": saves}, f)
