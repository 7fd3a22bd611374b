"""nanoGPT's train.py in miniature: hand-made batches from ``np.memmap`` files, a learning rate
set by hand every iteration, ``estimate_loss()`` under ``model.eval()`` + ``torch.no_grad()``
over a few batches of the train and the val split, and a checkpoint dict with ``iter_num``,
``best_val_loss`` and the ``config`` of globals (no argparse). Nothing provtel-specific."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from _result import write
from torch import nn

# -- configuration: globals, as nanoGPT's configurator overrides them --------------------------
out_dir = "out"
eval_interval = 10
eval_iters = 3
max_iters = 30
batch_size = 4
block_size = 8
vocab_size = 32
n_embd = 16
learning_rate = 1e-2
warmup_iters = 5
min_lr = 1e-3
always_save_checkpoint = True
wandb_api_key = "sk-not-a-real-key"  # a secret-looking setting: must be redacted
config_keys = [
    k
    for k, v in globals().items()
    if not k.startswith("_") and isinstance(v, (int, float, bool, str))
]
config = {k: globals()[k] for k in config_keys}

torch.manual_seed(1337)
rng = np.random.default_rng(0)
for split, n in (("train", 2000), ("val", 400)):
    rng.integers(0, vocab_size, size=n, dtype=np.uint16).tofile(f"{split}.bin")


def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.memmap(f"{split}.bin", dtype=np.uint16, mode="r")  # re-mapped every batch
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack(
        [torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix]
    )
    return x, y


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, n_embd), nn.GELU(), nn.Dropout(0.1))
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.lm_head(self.mlp(self.wte(idx)))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


model = TinyGPT()
optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
evaluations: list[dict[str, object]] = []


@torch.no_grad()
def estimate_loss() -> dict[str, torch.Tensor]:
    out = {}
    model.eval()
    for split in ["train", "val"]:
        losses = torch.zeros(eval_iters)
        batch_losses = []
        for k in range(eval_iters):
            X, Y = get_batch(split)
            _logits, loss = model(X, Y)
            losses[k] = loss.item()
            batch_losses.append(loss.item())
        out[split] = losses.mean()
        # provtel's summary: each batch weighted by its rows (B*T), summed in order
        total, rows = 0.0, 0
        for v in batch_losses:
            total += v * (batch_size * block_size)
            rows += batch_size * block_size
        evaluations.append(
            {"split": split, "iter": iter_num, "batch_losses": batch_losses, "mean": total / rows}
        )
    model.train()
    return out


def get_lr(it: int) -> float:
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    ratio = (it - warmup_iters) / (max_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


os.makedirs(out_dir, exist_ok=True)
iter_num = 0
best_val_loss = 1e9
train_losses: list[float] = []
lrs: list[float] = []
saved: list[dict[str, object]] = []
X, Y = get_batch("train")
while True:
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    if iter_num % eval_interval == 0:
        losses = estimate_loss()
        if losses["val"] < best_val_loss or always_save_checkpoint:
            best_val_loss = min(losses["val"], best_val_loss)
            if iter_num > 0:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "model_args": {"n_embd": n_embd, "vocab_size": vocab_size},
                    "iter_num": iter_num,
                    "best_val_loss": best_val_loss,
                    "config": config,
                }
                torch.save(checkpoint, os.path.join(out_dir, "ckpt.pt"))
                saved.append({"iter_num": iter_num, "best_val_loss": float(best_val_loss)})
    _logits, loss = model(X, Y)
    X, Y = get_batch("train")
    train_losses.append(loss.item())
    lrs.append(lr)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1
    if iter_num > max_iters:
        break

write(
    train_losses,
    {"model": model},
    learning_rates=lrs,
    evaluations=evaluations,
    saved=saved,
    config=config,
)
