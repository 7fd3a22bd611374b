"""Work spread over a multiprocessing.Pool started by a given method (argv[1]), each task a
little training of its own, then the script's own training loop. argv[2]: ``with`` (the pool
is terminated when the block ends, as Pool.__exit__ does) or ``close`` (close and join)."""

import json
import multiprocessing
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def task(seed: int) -> float:
    """A unit of work that trains: in a worker it must not become a run of its own."""
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.mse_loss(model(torch.ones(4, 3)), torch.zeros(4, 1))
    loss.backward()
    opt.step()
    return loss.item()


def main() -> None:
    method, ending = sys.argv[1], sys.argv[2]
    context = multiprocessing.get_context(method)
    if ending == "with":
        with context.Pool(2) as pool:
            results = pool.map(task, range(4))
    else:
        pool = context.Pool(2)
        results = pool.map(task, range(4))
        pool.close()
        pool.join()
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in DataLoader(data, batch_size=8):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    with open("done.json", "w") as f:
        json.dump({"results": results, "batches": 4}, f)


if __name__ == "__main__":  # spawn and forkserver workers import this module
    main()
