"""Two experiments in one process (a sweep in a notebook), each with its own losses."""

import torch
import torch.nn.functional as F

import provtel.compat.yprov4ml as yprov4ml

for name, lr in (("sweep_a", 0.1), ("sweep_b", 0.01)):
    yprov4ml.start_run(name, provenance_save_dir="prov")
    yprov4ml.log_param("lr", lr)
    model = torch.nn.Linear(4, 1)
    optim = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    for step in range(3):
        optim.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optim.step()
        yprov4ml.log_metric("loss_" + name, loss.item(), yprov4ml.Context.TRAINING, step=step)
        yprov4ml.log_metric("shared", float(step), yprov4ml.Context.TRAINING, step=step)
    yprov4ml.end_run()
