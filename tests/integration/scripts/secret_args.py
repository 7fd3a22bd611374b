"""A training script given credentials on its command line (an API key, a database password),
with a configuration holding a token saved inside its checkpoint."""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--api-key", required=True)
parser.add_argument("--db-password", required=True)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--wandb-entity", default="")  # secret only by OTEL_PYTHON_PROVTEL_REDACT
args = parser.parse_args()

torch.manual_seed(0)
data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
for x, y in DataLoader(data, batch_size=8):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
config = {"lr": args.lr, "hub_token": args.api_key, "db_password": args.db_password}
torch.save({"config": config, "model": model.state_dict()}, "checkpoint.pt")
