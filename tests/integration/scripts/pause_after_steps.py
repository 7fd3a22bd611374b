"""3000 optimizer steps without a DataLoader, then a pause: the test kills the process during
the pause (``kill -9``) or the script leaves with ``os._exit`` (no exit handlers run)."""

from __future__ import annotations

import os
import sys
import time

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(8, 4), torch.randn(8, 1)
for _ in range(3000):
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print("steps done", flush=True)
if sys.argv[1:] == ["exit"]:
    time.sleep(2.5)  # past the ~1 s promise, with a margin for a machine slowed by load
    os._exit(0)
time.sleep(120)  # killed by the test meanwhile
