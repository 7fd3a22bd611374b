"""An exception inside the training loop (the loss diverges in the second epoch)."""

from __future__ import annotations

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(29)
data = TensorDataset(torch.randn(48, 3), torch.randn(48, 1))
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
losses = []
try:
    for epoch in range(3):
        for step, (x, y) in enumerate(DataLoader(data, batch_size=8)):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            losses.append(loss.item())
            if epoch == 1 and step == 2:
                raise FloatingPointError("loss diverged")
            optimizer.step()
finally:
    write(losses, {"model": model})
