"""No DataLoader: batches sliced from tensors by hand; SGD with momentum, StepLR, argparse,
seeds, a checkpoint per epoch and a final load. A step is one optimizer step."""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch
from _result import write
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    x = torch.randn(args.steps * args.batch_size, 8)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(len(x), 1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    losses, lrs = [], []
    for epoch in range(args.epochs):
        order = torch.randperm(len(x))
        for i in range(args.steps):
            index = order[i * args.batch_size : (i + 1) * args.batch_size]
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x[index]), y[index])
            loss.backward()
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
        torch.save({"epoch": epoch, "model": model.state_dict()}, f"ckpt_{epoch}.pt")
    state = torch.load(f"ckpt_{args.epochs - 1}.pt")
    model.load_state_dict(state["model"])
    write(losses, {"model": model}, learning_rates=lrs)


if __name__ == "__main__":
    main()
