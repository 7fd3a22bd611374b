"""Training with DataLoader workers started by a given method (argv[1]); argv[2] = persistent."""

import json
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    method, persistent = sys.argv[1], sys.argv[2] == "persistent"
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(96, 4), torch.randn(96, 1))
    loader = DataLoader(
        data,
        batch_size=8,
        num_workers=2,
        multiprocessing_context=method,
        persistent_workers=persistent,
    )
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = 0
    for _epoch in range(2):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            batches += 1
    with open("done.json", "w") as f:
        json.dump({"batches": batches, "done_at": time.time()}, f)


if __name__ == "__main__":  # spawn and forkserver workers import this module
    main()
