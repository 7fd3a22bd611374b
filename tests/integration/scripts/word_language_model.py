"""pytorch/examples word_language_model in miniature: a corpus tensor batchified by hand,
``get_batch`` slices of it, truncated BPTT with an LSTM, plain SGD on ``p.data`` (no optimizer),
``evaluate()`` under ``model.eval()`` + ``torch.no_grad()`` on ``val_data`` each epoch, the
learning rate divided by 4 when validation does not improve, ``torch.save(model)`` of the best
model, and a final ``evaluate(test_data)`` after reloading it. argparse configuration."""

from __future__ import annotations

import argparse
import math

import torch
from _result import write
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=20.0)
parser.add_argument("--bptt", type=int, default=7)
parser.add_argument("--batch_size", type=int, default=4)
parser.add_argument("--eval_batch_size", type=int, default=2)
parser.add_argument("--seed", type=int, default=1111)
parser.add_argument("--save", default="model.pt")
args = parser.parse_args()
torch.manual_seed(args.seed)

ntokens = 40
corpus = torch.randint(0, ntokens, (1000,))
train_ids, val_ids, test_ids = corpus[:700], corpus[700:850], corpus[850:]


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()


train_data = batchify(train_ids, args.batch_size)
val_data = batchify(val_ids, args.eval_batch_size)
test_data = batchify(test_ids, args.eval_batch_size)


class RNNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(ntokens, 16)
        self.rnn = nn.LSTM(16, 16)
        self.decoder = nn.Linear(16, ntokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(self.encoder(x))
        return self.decoder(output).view(-1, ntokens)


def get_batch(source: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    seq_len = min(args.bptt, len(source) - 1 - i)
    data = source[i : i + seq_len]
    target = source[i + 1 : i + 1 + seq_len].view(-1)
    return data, target


model = RNNModel()
criterion = nn.NLLLoss()
losses: list[float] = []
evaluations: list[dict[str, object]] = []


def evaluate(data_source: torch.Tensor, name: str) -> float:
    model.eval()
    total_loss = 0.0
    batch_losses, weights = [], []
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, args.bptt):
            data, targets = get_batch(data_source, i)
            output = torch.log_softmax(model(data), dim=-1)
            loss = criterion(output, targets).item()
            total_loss += len(data) * loss
            batch_losses.append(loss)
            weights.append(output.size(0))
    mine, n = 0.0, 0
    for v, w in zip(batch_losses, weights, strict=True):
        mine += v * w
        n += w
    result = total_loss / (len(data_source) - 1)
    evaluations.append(
        {"data": name, "batch_losses": batch_losses, "mean": mine / n, "script": result}
    )
    return result


def train() -> None:
    model.train()
    for i in range(0, train_data.size(0) - 1, args.bptt):
        data, targets = get_batch(train_data, i)
        model.zero_grad()
        output = torch.log_softmax(model(data), dim=-1)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())


lr = args.lr
best_val_loss = None
for epoch in range(1, args.epochs + 1):
    train()
    val_loss = evaluate(val_data, "val_data")
    print(
        f"end of epoch {epoch} | valid loss {val_loss:5.2f} | valid ppl {math.exp(val_loss):8.2f}"
    )
    if not best_val_loss or val_loss < best_val_loss:
        with open(args.save, "wb") as f:
            torch.save(model, f)
        best_val_loss = val_loss
    else:
        lr /= 4.0

with open(args.save, "rb") as f:
    model = torch.load(f, weights_only=False)
test_loss = evaluate(test_data, "test_data")
print(f"End of training | test loss {test_loss:5.2f}")
write(losses, {"model": model}, evaluations=evaluations)
