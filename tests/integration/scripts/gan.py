"""A GAN: two models, two Adam optimizers stepping in turn (discriminator, then generator).
With a DataLoader a step is one batch; ``--no-loader`` slices batches by hand and a step is one
round of both optimizers. A step's loss is its first backward's: the discriminator's."""

from __future__ import annotations

import sys

import torch
from _result import write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

no_loader = "--no-loader" in sys.argv
torch.manual_seed(13)
real = TensorDataset(torch.randn(64, 2) * 0.5 + torch.tensor([2.0, -1.0]))
generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
discriminator = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
bce = nn.BCEWithLogitsLoss()
losses_d, losses_g = [], []
for _epoch in range(2):
    if no_loader:
        batches = [(real.tensors[0][i : i + 16],) for i in range(0, 64, 16)]
    else:
        batches = DataLoader(real, batch_size=16, shuffle=True)
    for (x,) in batches:
        fake = generator(torch.randn(len(x), 4))
        opt_d.zero_grad()
        loss_d = bce(discriminator(x), torch.ones(len(x), 1)) + bce(
            discriminator(fake.detach()), torch.zeros(len(x), 1)
        )
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = bce(discriminator(fake), torch.ones(len(x), 1))
        loss_g.backward()
        opt_g.step()
        losses_d.append(loss_d.item())
        losses_g.append(loss_g.item())
write(losses_d, {"generator": generator, "discriminator": discriminator}, losses_g=losses_g)
