"""Trains until stopped (or argv[1] == 'exit'/'raise' after a few steps); prints 'ready'."""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    how = sys.argv[1]
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(4096, 4), torch.randn(4096, 1)), batch_size=8)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = 0
    for epoch in range(10_000):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            steps += 1
            if steps == 40:
                if how == "exit":
                    sys.exit(3)
                if how == "raise":
                    raise FloatingPointError("loss diverged")
                print("ready", flush=True)
        if epoch % 2 == 0:
            torch.save(model.state_dict(), f"ckpt_{epoch % 2}.pt")


if __name__ == "__main__":
    main()
