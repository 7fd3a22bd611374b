"""A Lightning ``fit`` + ``test`` as people write it: ``seed_everything``, a ``LightningModule``
with ``save_hyperparameters()``, ``self.log`` / ``self.log_dict`` of training and validation
metrics, ``configure_optimizers`` with a scheduler, ``ModelCheckpoint`` every epoch, the default
sanity check, a CSV logger, then ``trainer.test`` of the best checkpoint
(``load_from_checkpoint``).

Writes what Lightning reported to ``$RESULT``: every training loss it was given, the validation
metrics after each epoch (``trainer.callback_metrics``), the test results and the checkpoints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SEEN: dict[str, Any] = {"train_loss": [], "train_mae": [], "validation": [], "sanity_batches": 0}


class Regressor(pl.LightningModule):
    def __init__(self, hidden: int = 16, lr: float = 0.01, gamma: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        prediction = self(x)
        loss = nn.functional.mse_loss(prediction, y)
        self.log("train_loss", loss)
        self.log("train_mae", nn.functional.l1_loss(prediction, y), on_step=False, on_epoch=True)
        SEEN["train_loss"].append(loss.item())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.trainer.sanity_checking:
            SEEN["sanity_batches"] += 1
        x, y = batch
        prediction = self(x)
        self.log("val_loss", nn.functional.mse_loss(prediction, y))
        self.log_dict({"val_mae": nn.functional.l1_loss(prediction, y)})

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=1, gamma=self.hparams.gamma
        )
        return [optimizer], [scheduler]


class Seen(pl.Callback):
    """What the script itself saw after each epoch and validation (the values Lightning
    logged, as its callbacks get them)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        SEEN["train_mae"].append(float(trainer.callback_metrics["train_mae"]))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            SEEN["validation"].append(
                {k: float(trainer.callback_metrics[k]) for k in ("val_loss", "val_mae")}
            )


def loader(n: int, seed: int, shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=shuffle)


def main() -> None:
    pl.seed_everything(1234)
    model = Regressor(hidden=16, lr=0.01)
    checkpoints = ModelCheckpoint(
        dirpath="checkpoints", filename="{epoch}", save_top_k=-1, monitor="val_loss"
    )
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger("logs"),
        callbacks=[checkpoints, Seen()],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader(64, 0, shuffle=True), loader(48, 1))
    best = Regressor.load_from_checkpoint(checkpoints.best_model_path)
    (test,) = trainer.test(best, loader(32, 2), verbose=False)
    SEEN.update(
        test=test,
        best=str(Path(checkpoints.best_model_path).resolve()),
        checkpoints=sorted(str(p.resolve()) for p in Path("checkpoints").glob("*.ckpt")),
        hparams=dict(model.hparams),
    )
    with open(os.environ.get("RESULT", "result.json"), "w", encoding="utf-8") as f:
        json.dump(SEEN, f)


if __name__ == "__main__":
    main()
