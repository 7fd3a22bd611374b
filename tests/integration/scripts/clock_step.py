"""A run during which the wall clock is stepped forward by two seconds (an NTP or hypervisor
correction), after the first epoch: what provtel records must stay ordered as it happened.

The step is simulated in this process: ``time.time_ns`` and the name the OpenTelemetry SDK
imported it under (its default span times) both read two seconds ahead from then on. The script
times each epoch with the monotonic clock and writes those durations to ``result.json``."""

from __future__ import annotations

import json
import time

import torch
from opentelemetry.sdk import trace as sdk_trace
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import provtel

real_time_ns = time.time_ns
STEP_NS = 2_000_000_000


def stepped_time_ns() -> int:
    return real_time_ns() + STEP_NS


torch.manual_seed(0)
data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
durations = []
for epoch in range(3):
    if epoch == 1:  # the wall clock jumps ahead
        time.time_ns = stepped_time_ns
        sdk_trace.time_ns = stepped_time_ns  # type: ignore[attr-defined]
    t0 = time.perf_counter_ns()
    for x, y in DataLoader(data, batch_size=8):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    provtel.log_metric("epoch_marker", float(epoch))
    torch.save(model.state_dict(), f"weights_{epoch}.pt")
    durations.append(time.perf_counter_ns() - t0)
with open("result.json", "w", encoding="utf-8") as f:
    json.dump({"durations_ns": durations}, f)
