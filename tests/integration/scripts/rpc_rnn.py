"""pytorch/examples distributed/rpc/rnn in miniature: two processes over loopback (spawned), a
trainer (rank 0) whose model's embedding lives on a parameter server (rank 1) behind RRefs,
``dist_autograd.backward(context_id, [loss])`` and ``DistributedOptimizer.step(context_id)``."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed.autograd as dist_autograd
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.optim import DistributedOptimizer
from torch.distributed.rpc import RRef


class EmbeddingTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Embedding(20, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def _remote_method(method, rref, *args, **kwargs):  # type: ignore[no-untyped-def]
    return rpc.rpc_sync(rref.owner(), _call_method, args=[method, rref, *args], kwargs=kwargs)


def _call_method(method, rref, *args, **kwargs):  # type: ignore[no-untyped-def]
    return method(rref.local_value(), *args, **kwargs)


def _parameter_rrefs(module: nn.Module) -> list[RRef]:
    return [RRef(p) for p in module.parameters()]


class RNNModel(nn.Module):
    def __init__(self, ps: str) -> None:
        super().__init__()
        self.emb_table_rref = rpc.remote(ps, EmbeddingTable)
        torch.manual_seed(1)
        self.decoder = nn.Linear(8, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = _remote_method(EmbeddingTable.forward, self.emb_table_rref, x)
        return self.decoder(emb)

    def parameter_rrefs(self) -> list[RRef]:
        remote = _remote_method(_parameter_rrefs, self.emb_table_rref)
        return remote + [RRef(p) for p in self.decoder.parameters()]


def run_trainer(result: str) -> list[float]:
    model = RNNModel("ps")
    opt = DistributedOptimizer(torch.optim.SGD, model.parameter_rrefs(), lr=0.05)
    criterion = nn.CrossEntropyLoss()
    torch.manual_seed(2)
    losses = []
    for _epoch in range(3):
        for _ in range(4):
            data = torch.randint(0, 20, (5,))
            target = torch.randint(0, 20, (5,))
            with dist_autograd.context() as context_id:
                loss = criterion(model(data), target)
                dist_autograd.backward(context_id, [loss])
                opt.step(context_id)
            losses.append(loss.item())
    import json

    with open(result, "w", encoding="utf-8") as f:
        json.dump({"losses": losses}, f)
    return losses


def run_worker(rank: int, world_size: int, port: str, result: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = port
    options = rpc.TensorPipeRpcBackendOptions(num_worker_threads=4, rpc_timeout=60)
    if rank == 0:
        rpc.init_rpc("trainer", rank=rank, world_size=world_size, rpc_backend_options=options)
        run_trainer(result)
    else:
        rpc.init_rpc("ps", rank=rank, world_size=world_size, rpc_backend_options=options)
    rpc.shutdown()


if __name__ == "__main__":
    mp.spawn(
        run_worker,
        args=(2, sys.argv[1], os.environ.get("RESULT", "result.json")),
        nprocs=2,
        join=True,
    )
