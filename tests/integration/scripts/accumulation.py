"""Gradient accumulation: the optimizer steps every ``--accumulate`` micro-batches, with a
validation pass per epoch. With a DataLoader a step is one batch (``--no-loader``: batches
sliced by hand, and a step is one optimizer step, whose loss is its first micro-batch's)."""

from __future__ import annotations

import argparse

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accumulate", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-loader", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(5)
    data = TensorDataset(torch.randn(96, 6), torch.randint(0, 3, (96,)))
    val = TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,)))
    loader = DataLoader(data, batch_size=8, shuffle=True)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses, steps = [], 0
    for _epoch in range(args.epochs):
        model.train()
        if args.no_loader:
            order = torch.randperm(len(data))
            batches = [data[order[i : i + 8]] for i in range(0, len(data), 8)]
        else:
            batches = loader
        for i, (x, y) in enumerate(batches):
            loss = nn.functional.cross_entropy(model(x), y) / args.accumulate
            loss.backward()
            if not args.no_loader or i % args.accumulate == 0:
                losses.append(loss.item())  # the loss of each step as defined above
            if (i + 1) % args.accumulate == 0:
                optimizer.step()
                optimizer.zero_grad()
                steps += 1
        model.eval()
        with torch.no_grad():
            for x, y in DataLoader(val, batch_size=16):
                nn.functional.cross_entropy(model(x), y)
    write(losses, {"model": model}, optimizer_steps=steps)


if __name__ == "__main__":
    main()
