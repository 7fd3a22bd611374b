"""A training script written the way yProv4ML's documentation teaches, switched by one import.

Run it with ``python`` or ``opentelemetry-instrument python``; ``--yprov`` uses the real yprov4ml
package instead (for comparison, in a venv that has it).
"""

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

if "--yprov" in sys.argv:
    import yprov4ml
else:
    import provtel.compat.yprov4ml as yprov4ml

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--save-dir", default="prov")
parser.add_argument("--fail", action="store_true", help="raise in the second epoch")
parser.add_argument("--yprov", action="store_true")
parser.add_argument("--record", help="write every logged value to this JSON file (for tests)")
args = parser.parse_args()
logged = []  # (name, context, step, value) as the script logged them

yprov4ml.start_run(
    prov_user_namespace="www.example.org",
    experiment_name="mnist_like",
    provenance_save_dir=args.save_dir,
    save_after_n_logs=100,
)

torch.manual_seed(0)
x = torch.randn(256, 8)
y = (x.sum(dim=1) > 0).long()
train_loader = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True)
val_loader = DataLoader(TensorDataset(x[192:], y[192:]), batch_size=32)
yprov4ml.log_dataset("train_dataset", train_loader)
yprov4ml.log_dataset(val_loader, "val_dataset")  # the argument order of the older docs

model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
optim = torch.optim.Adam(model.parameters(), lr=0.01)
yprov4ml.log_param("optimizer", "Adam")
yprov4ml.log_param("lr", 0.01)
yprov4ml.log_param("loss_fn", "cross_entropy")
yprov4ml.log_source_code()
yprov4ml.log_execution_command("python yprov_train.py", "yprov_train.py")

for epoch in range(args.epochs):
    model.train()
    for xb, yb in train_loader:
        optim.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optim.step()
        yprov4ml.log_metric("Loss", loss.item(), context=yprov4ml.Context.TRAINING, step=epoch)
        logged.append(("Loss", "training", epoch, loss.item()))
    yprov4ml.log_system_metrics(yprov4ml.Context.TRAINING, step=epoch)
    yprov4ml.save_model_version("mlp", model, yprov4ml.Context.TRAINING, step=epoch)
    if args.record:  # before a failure too: what was logged so far
        with open(args.record, "w") as f:
            json.dump(logged, f)
    if args.fail and epoch == 1:
        raise RuntimeError("diverged")
    model.eval()
    with torch.no_grad():
        for xb, yb in val_loader:
            val_loss = F.cross_entropy(model(xb), yb)
            yprov4ml.log_metric("Loss", val_loss.item(), yprov4ml.Context.VALIDATION, step=epoch)
            logged.append(("Loss", "validation", epoch, val_loss.item()))
            accuracy = (model(xb).argmax(dim=1) == yb).float().mean().item()
            yprov4ml.log_metric("accuracy", accuracy, "validation", step=epoch)  # 3.x: a string
            logged.append(("accuracy", "validation", epoch, accuracy))

yprov4ml.log_model("mlp_final", model)
yprov4ml.end_run(create_graph=True, create_svg=True)
if args.record:
    with open(args.record, "w") as f:
        json.dump(logged, f)
