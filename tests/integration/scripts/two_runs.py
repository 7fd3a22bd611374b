"""Two named runs in one process (a notebook, or pretraining then fine-tuning)."""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import provtel.run


def train(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()


def main() -> None:
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=8)
    model = nn.Linear(4, 1)
    with provtel.run(name="pretrain", stage=1):
        train(model, loader, epochs=2, lr=0.1)
        torch.save(model.state_dict(), "pretrained.pt")
    try:
        with provtel.run(name="finetune", stage=2):
            model.load_state_dict(torch.load("pretrained.pt"))
            train(model, loader, epochs=1, lr=0.01)
            raise RuntimeError("stopped on purpose")
    except RuntimeError:
        pass
    print("done")


if __name__ == "__main__":
    main()
