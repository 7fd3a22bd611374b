"""No optimizer: manual SGD on ``p.data``, batches sliced by hand, then a test pass over a
DataLoader. A step runs from one backward to the next."""

from __future__ import annotations

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(3)
x = torch.randn(80, 5)
y = (x[:, :1] - x[:, 1:2]).sign()
model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 1))
losses = []
for step in range(10):
    batch = slice(8 * step, 8 * step + 8)
    loss = nn.functional.soft_margin_loss(model(x[batch]), y[batch])
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p.data -= 0.1 * p.grad
    losses.append(loss.item())

with torch.no_grad():
    test = DataLoader(TensorDataset(x, y), batch_size=20)
    test_loss = sum(nn.functional.soft_margin_loss(model(a), b).item() for a, b in test)
write(losses, {"model": model}, test_batches=len(test))
