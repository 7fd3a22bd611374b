"""Two training loops in one script: pre-training over a DataLoader with Adam and a
validation pass per epoch, then fine-tuning a new head with SGD on batches sliced by hand
(the first optimizer is still alive)."""

from __future__ import annotations

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(23)
train = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
val = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
body = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
head = nn.Linear(16, 1)
model = nn.Sequential(body, head)
pretrain = torch.optim.Adam(model.parameters(), lr=1e-2)
losses, lrs = [], []
for _epoch in range(2):
    for x, y in DataLoader(train, batch_size=16, shuffle=True):
        pretrain.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        pretrain.step()
        losses.append(loss.item())
        lrs.append(1e-2)
    with torch.no_grad():
        for x, y in DataLoader(val, batch_size=8):
            nn.functional.mse_loss(model(x), y)
pretrained = len(losses)

new_head = nn.Linear(16, 1)
finetune = torch.optim.SGD(new_head.parameters(), lr=0.05)
x, y = train.tensors
for i in range(8):
    finetune.zero_grad()
    loss = nn.functional.l1_loss(
        new_head(body(x[8 * i : 8 * i + 8]).detach()), y[8 * i : 8 * i + 8]
    )
    loss.backward()
    finetune.step()
    losses.append(loss.item())
    lrs.append(0.05)
write(losses, {"model": model, "new_head": new_head}, pretrained=pretrained, learning_rates=lrs)
