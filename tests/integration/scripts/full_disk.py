"""Training on a disk that fills up: files may grow to argv[1] bytes only (RLIMIT_FSIZE)."""

import resource
import signal
import sys
import time

import torch
from torch import nn


def main() -> None:
    limit = int(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    for step in range(3000):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if step % 500 == 0:
            time.sleep(0.6)  # let blocks and batches reach the disk while it fills
    print("trained", flush=True)


if __name__ == "__main__":
    main()
