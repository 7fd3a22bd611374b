"""provtel demo: a small, realistic PyTorch training script with no provtel code in it.

Run it instrumented:

    opentelemetry-instrument python examples/train.py --epochs 2

and find its provenance in ``prov/train-<time>-<pid>/prov.json``. It trains a small MLP on a
synthetic regression task (no downloads), with argparse arguments, seeds, DataLoaders with
worker processes, Adam with a StepLR schedule, a validation pass per epoch, a checkpoint per
epoch and a final test pass.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int, features: int, generator: torch.Generator) -> TensorDataset:
    x = torch.randn(n, features, generator=generator)
    w = torch.linspace(-1, 1, features)
    y = (x @ w).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--checkpoints", default="checkpoints")
    args = parser.parse_args()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train = make_data(4096, 16, generator)
    val = make_data(1024, 16, generator)
    test = make_data(1024, 16, generator)
    train_loader = DataLoader(
        train,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    val_loader = DataLoader(val, batch_size=256)
    test_loader = DataLoader(test, batch_size=256)

    model = nn.Sequential(nn.Linear(16, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loss_fn = nn.MSELoss()
    out = Path(args.checkpoints)
    out.mkdir(parents=True, exist_ok=True)

    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(loss_fn(model(x), y).item() for x, y in val_loader) / len(val_loader)
        torch.save({"epoch": epoch, "model": model.state_dict()}, out / f"epoch_{epoch}.pt")
        print(f"epoch {epoch}: train loss {loss.item():.4f}  val loss {val_loss:.4f}")

    with torch.no_grad():
        test_loss = sum(loss_fn(model(x), y).item() for x, y in test_loader) / len(test_loader)
    print(f"test loss {test_loss:.4f}")


if __name__ == "__main__":
    main()
