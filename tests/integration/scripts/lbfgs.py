"""LBFGS with a closure (several backward passes inside each optimizer step), full batch, no
DataLoader. A step is one ``optimizer.step(closure)``; its loss is the closure's first one,
which is what ``step`` returns."""

from __future__ import annotations

import torch
from _result import write
from torch import nn

torch.manual_seed(11)
x = torch.randn(64, 3)
y = torch.sin(x).sum(dim=1, keepdim=True)
model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5, history_size=4)
evaluations = 0


def closure() -> torch.Tensor:
    global evaluations
    evaluations += 1
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss


losses = [optimizer.step(closure).item() for _ in range(6)]
write(losses, {"model": model}, closure_evaluations=evaluations)
