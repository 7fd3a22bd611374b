"""torch.compile: a compiled model whose forward calls ``self.parameters()`` (epoch 0), then a
compiled training step with backward and optimizer step inside (epoch 1). The backend counts
the graphs it receives and runs them eagerly, so no C++ compiler is needed."""

from __future__ import annotations

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

graphs: list[int] = []


def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
    graphs.append(len(gm.graph.nodes))
    return gm.forward


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 24), nn.SiLU(), nn.Linear(24, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.parameters()).dtype  # as many real models do (e.g. a dtype property)
        return self.body(x.to(dtype))


torch.manual_seed(19)
data = TensorDataset(torch.randn(64, 6), torch.randn(64, 1))
model = Net()
compiled = torch.compile(model, backend=counting_backend)
optimizer = torch.optim.Adam(compiled.parameters(), lr=1e-2)


@torch.compile(backend=counting_backend)
def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


losses = []
for x, y in DataLoader(data, batch_size=16, drop_last=True):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(compiled(x), y)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
for x, y in DataLoader(data, batch_size=16, drop_last=True):
    losses.append(train_step(x, y).item())
write(losses, {"model": model}, graphs=graphs)
