"""What a test script computed, written where the test asks (``$RESULT``, default result.json).

Losses are Python floats (JSON keeps them exactly). Final parameters are written as the hex of
their raw bytes, so that a comparison is bit for bit (not through torch.save, which the
instrumentation would record as a checkpoint).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch


def parameters(**modules: torch.nn.Module) -> dict[str, Any]:
    """``{"<module>.<name>": {dtype, shape, hex}}`` of every parameter and buffer."""
    out = {}
    for prefix, module in modules.items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            data = tensor.detach().cpu().contiguous()
            out[f"{prefix}.{name}"] = {
                "dtype": str(data.dtype).removeprefix("torch."),
                "shape": list(data.shape),
                "hex": data.view(torch.uint8).numpy().tobytes().hex(),
            }
    return out


def write(losses: list[float], modules: dict[str, torch.nn.Module], **extra: Any) -> None:
    """Write the losses (one per step, in order), the final parameters and ``extra``."""
    result = {"losses": [float(v) for v in losses], "params": parameters(**modules), **extra}
    with open(os.environ.get("RESULT", "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
