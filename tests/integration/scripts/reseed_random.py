"""Re-seeds Python's ``random`` at the start of every epoch (as augmentation pipelines do for
reproducible epochs), trains over a DataLoader, validates and saves a checkpoint per epoch.
Span ids must not repeat: every epoch, evaluation and save must be in the document."""

from __future__ import annotations

import random

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EPOCHS = 4
torch.manual_seed(3)
train = TensorDataset(torch.randn(48, 5), torch.randn(48, 1))
val = TensorDataset(torch.randn(16, 5), torch.randn(16, 1))
model = nn.Linear(5, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.MSELoss()
losses: list[float] = []
validation: list[float] = []
for epoch in range(EPOCHS):
    random.seed(1234)  # the same seed every epoch
    model.train()
    for x, y in DataLoader(train, batch_size=8):
        x = x + 0.01 * random.random()  # "augmentation" from the re-seeded stream
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        batch = [loss_fn(model(x), y).item() for x, y in DataLoader(val, batch_size=8)]
    total = 0.0
    for v in batch:
        total += v * 8
    validation.append(total / 16)
    torch.save({"epoch": epoch, "model": model.state_dict()}, f"epoch_{epoch}.pt")
write(losses, {"model": model}, validation=validation, epochs=EPOCHS)
