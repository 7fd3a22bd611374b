"""A short training run whose bottleneck is chosen on the command line, for `provtel report`.

    --mode input       the dataset sleeps in __getitem__: the steps wait for data
    --mode compute     a wide MLP on in-memory tensors: the steps compute
    --mode checkpoint  a tiny model that saves a large checkpoint every few steps

Every mode ends each epoch with a validation pass. ``--hidden`` (a hyperparameter used nowhere
else) and ``--data`` (the dataset's root folder, hence its name and path) let two runs differ in
exactly one input. Writes the wall time of the training loop it measured itself to $RESULT.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Folder(Dataset):
    """Synthetic samples "stored" under a root folder; optionally slow to read."""

    def __init__(self, root: str, n: int, features: int, seed: int, delay: float) -> None:
        self.root = root
        self.delay = delay
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, features, generator=g)
        self.y = self.x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.delay:
            time.sleep(self.delay)
        return self.x[i], self.y[i]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("input", "compute", "checkpoint"), required=True)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--data", default="data_a")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.004, help="input mode: s per sample")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    Path(args.data).mkdir(parents=True, exist_ok=True)
    features, n, batch = 8, 96, 8
    delay = 0.0
    if args.mode == "input":
        delay = args.delay  # 32 ms of reading per batch of 8, against well under 1 ms of compute
    if args.mode == "compute":
        features, n, batch = 256, 512, 64
    train = Folder(args.data, n, features, args.seed, delay)
    val = Folder(args.data + "_val", 32, features, args.seed + 1, 0.0)
    train_loader = DataLoader(train, batch_size=batch, shuffle=True)
    val_loader = DataLoader(val, batch_size=16)
    width = 512 if args.mode == "compute" else args.hidden
    layers = 3 if args.mode == "compute" else 1
    blocks = []
    for i in range(layers):
        blocks += [nn.Linear(features if i == 0 else width, width), nn.ReLU()]
    model = nn.Sequential(*blocks, nn.Linear(width, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    blob = torch.zeros(12_000_000) if args.mode == "checkpoint" else None  # 48 MB
    started = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            if blob is not None and step % 3 == 0:
                torch.save({"model": model.state_dict(), "state": blob}, f"ckpt_{step % 2}.pt")
        model.eval()
        with torch.no_grad():
            val_loss = sum(loss_fn(model(x), y).item() for x, y in val_loader) / len(val_loader)
        print(f"epoch {epoch}: val loss {val_loss:.4f}")
    elapsed = time.perf_counter() - started
    if os.environ.get("RESULT"):
        Path(os.environ["RESULT"]).write_text(json.dumps({"loop_s": elapsed, "steps": step}))


if __name__ == "__main__":
    main()
