"""A Hugging Face ``Trainer`` fine-tune as people write it, with nothing downloaded: a tiny BERT
built from a ``BertConfig``, a dataset of tensors (no tokenizer), evaluation and a checkpoint per
epoch, ``compute_metrics`` (accuracy), a final ``trainer.evaluate()``, then the model saved with
``save_pretrained`` and loaded back with ``from_pretrained``.

Writes what the Trainer reported to ``$RESULT``: its log history, the final evaluation, the
checkpoint folders and the training arguments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)


class Tokens(torch.utils.data.Dataset):
    """Random token sequences; the label is whether token 1 occurs more often than token 2."""

    def __init__(self, n: int, length: int, vocab: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        self.labels = ((self.ids == 1).sum(1) > (self.ids == 2).sum(1)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


def accuracy(prediction: object) -> dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids  # type: ignore[attr-defined]
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main() -> None:
    set_seed(3)
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    args = TrainingArguments(
        output_dir="out",
        num_train_epochs=2,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=5e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_steps=2,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=3,
        hub_token="hf_not_a_real_token",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Tokens(48, 12, 32, seed=0),
        eval_dataset=Tokens(32, 12, 32, seed=1),
        compute_metrics=accuracy,
    )
    trainer.train()
    final = trainer.evaluate()
    trainer.save_model("final")
    reloaded = BertForSequenceClassification.from_pretrained("final")
    result = {
        "log_history": trainer.state.log_history,
        "final": final,
        "checkpoints": [
            str(p.resolve())
            for p in sorted(Path("out").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
        ],
        "final_dir": str(Path("final").resolve()),
        "reloaded_parameters": sum(p.numel() for p in reloaded.parameters()),
        "args": {
            k: args.to_dict()[k]
            for k in ("num_train_epochs", "per_device_train_batch_size", "learning_rate")
        },
    }
    with open(os.environ.get("RESULT", "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
