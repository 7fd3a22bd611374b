"""Mixed precision on CPU: autocast (bfloat16) with a GradScaler whose scale is so large that
gradients overflow every few steps, so that it skips those optimizer steps."""

from __future__ import annotations

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(17)
data = TensorDataset(torch.randn(96, 8), torch.randn(96, 1))
model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
scaler = torch.amp.GradScaler("cpu", init_scale=3e38, growth_interval=2)
losses, skipped = [], []
for x, y in DataLoader(data, batch_size=8):
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.mse_loss(model(x).float(), y)
    scale = scaler.get_scale()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    losses.append(loss.item())
    skipped.append(int(scaler.get_scale() < scale))  # the scale backs off on a skipped step
write(losses, {"model": model}, skipped=skipped)
