"""The pass/step machine's newer events, in-process with an SDK and in-memory exporters:
passes from the model's own state, evaluation losses, logged values, configuration, artifacts,
safetensors files and the hand-over of idle blocks (with a fake clock)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import provtel
from provtel.instrumentation.torch import TorchInstrumentor, events
from provtel.instrumentation.torch import tracker as tracker_module
from provtel.semconv import columns
from tests.support import unpacked


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Instrument with in-memory exporters; ``spans()`` uninstruments and returns them."""
    for name in ("BLOCK_STEPS", "BLOCK_SECONDS", "CHECKPOINT_DIGEST", "CUDA_EVENTS"):
        monkeypatch.delenv(f"OTEL_PYTHON_PROVTEL_TORCH_{name}", raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    TorchInstrumentor().instrument(tracer_provider=provider, meter_provider=meters)

    def finish() -> list[ReadableSpan]:
        TorchInstrumentor().uninstrument()
        return list(exporter.get_finished_spans())

    yield finish
    if TorchInstrumentor().is_instrumented_by_opentelemetry:
        TorchInstrumentor().uninstrument()
    provider.shutdown()
    meters.shutdown()


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return unpacked(span.attributes)


def _passes(found: list[ReadableSpan]) -> list[dict[str, Any]]:
    passes = [s for s in found if s.name in ("ml.epoch", "ml.evaluation")]
    return [_attrs(s) for s in sorted(passes, key=lambda s: s.start_time or 0)]


def _logged(found: list[ReadableSpan]) -> list[tuple[str, float, int, str]]:
    rows = []
    for s in sorted(found, key=lambda s: s.start_time or 0):
        a = _attrs(s)
        if "ml.log.name" in a:
            rows += list(
                zip(
                    a["ml.log.name"],
                    a["ml.log.value"],
                    a["ml.log.step"],
                    a["ml.log.context"],
                    strict=True,
                )
            )
    return rows


def _hand_batched(evaluate: Any) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    val_x, val_y = torch.randn(16, 3), torch.randn(16, 1)
    for _epoch in range(2):
        model.train()
        for i in range(0, 32, 8):
            loss = F.mse_loss(model(x[i : i + 8]), y[i : i + 8])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        evaluate(model, val_x, val_y)
    return model


def test_hand_batched_training_and_evaluation_become_passes(spans: Any) -> None:
    computed: list[list[float]] = []

    def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        model.eval()
        with torch.no_grad():
            computed.append([F.mse_loss(model(x[i : i + 4]), y[i : i + 4]).item() for i in (0, 4)])

    test_model = _hand_batched(evaluate)
    test_x, test_y = torch.randn(8, 3), torch.randn(8, 1)
    evaluate(test_model, test_x, test_y)  # other data, after the last training: the test
    passes = _passes(spans())
    assert [(p["ml.activity"], p["ml.context"]) for p in passes] == [
        ("epoch", "training"),
        ("evaluation", "validation"),
        ("epoch", "training"),
        # the same data as the validation before it: a validation, though nothing follows
        ("evaluation", "validation"),
        ("evaluation", "test"),
    ]
    assert [p["ml.pass.source"] for p in passes] == ["model"] * 5
    assert [p["ml.pass.batches"] for p in passes] == [4, 2, 4, 2, 2]
    evaluations = [p for p in passes if p["ml.activity"] == "evaluation"]
    for p, losses in zip(evaluations, computed, strict=True):
        assert p["ml.eval.loss"] == (losses[0] * 4 + losses[1] * 4) / 8
        assert p["ml.eval.batches"] == 2 and p["ml.eval.samples"] == 8


def test_inference_mode_and_loss_modules_count_once(spans: Any) -> None:
    computed: list[float] = []
    criterion = nn.MSELoss()  # calls F.mse_loss inside: reported once

    def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.inference_mode():  # no model.eval(): grad mode alone says evaluation
            computed.append(criterion(model(x), y).item())

    _hand_batched(evaluate)
    passes = _passes(spans())
    evaluations = [p for p in passes if p["ml.activity"] == "evaluation"]
    assert [p["ml.eval.batches"] for p in evaluations] == [1, 1]
    assert [p["ml.eval.loss"] for p in evaluations] == computed


def test_provtel_context_names_the_evaluation(spans: Any) -> None:
    def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        with provtel.context("test"), torch.no_grad():
            F.mse_loss(model(x), y)

    _hand_batched(evaluate)
    contexts = [p["ml.context"] for p in _passes(spans()) if p["ml.activity"] == "evaluation"]
    assert contexts == ["test", "test"]


def test_dataloader_evaluation_records_its_losses(spans: Any) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train = TensorDataset(torch.randn(16, 3), torch.randn(16, 1))
    val = TensorDataset(torch.randn(12, 3), torch.randn(12, 1))
    computed = []
    for x, y in DataLoader(train, batch_size=4):
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        batches = [(F.mse_loss(model(x), y).item(), len(x)) for x, y in DataLoader(val, 5)]
    total = 0.0
    for v, n in batches:
        total += v * n
    computed.append(total / 12)
    found = spans()
    (evaluation,) = [p for p in _passes(found) if p["ml.activity"] == "evaluation"]
    assert evaluation["ml.eval.loss"] == computed[0]
    assert evaluation["ml.eval.batches"] == 3 and evaluation["ml.eval.samples"] == 12
    losses = [
        v
        for s in found
        if s.name == "ml.step_block" and _attrs(s)["ml.context"] == evaluation["ml.context"]
        for v in _attrs(s)["ml.step.loss"]
    ]
    assert losses == [v for v, _ in batches]
    assert ("eval_loss", computed[0], 4, evaluation["ml.context"]) in _logged(found)


def _column(attributes: dict[str, Any], name: str) -> list[Any]:
    """A block's per-step column, packed (``<name>.packed``) or a plain array."""
    packed = attributes.get(columns.packed_name(name))
    return columns.decode(packed) if packed is not None else list(attributes.get(name, ()))


def _prefetching(loader: DataLoader[Any]) -> Iterator[Any]:
    """What accelerate's DataLoaderShard does: ask for the next batch before handing out the
    current one, so the DataLoader ends before the last batch is used."""
    it = iter(loader)
    current = next(it)
    for following in it:
        yield current
        current = following
    yield current


def _train_and_validate(wrap: Any) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train = DataLoader(TensorDataset(torch.randn(12, 3), torch.randn(12, 1)), batch_size=4)
    val = DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)), batch_size=4)
    trained, evaluated = [], []
    model.train()
    for x, y in wrap(_prefetching(train), train):
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trained.append(loss.item())
    model.eval()
    with torch.no_grad():
        for x, y in wrap(_prefetching(val), val):
            evaluated.append(F.mse_loss(model(x), y).item())
    model.train()
    return trained, evaluated


@pytest.mark.parametrize("seen_by", ["framework_loader", "dataloader"])
def test_a_loader_that_prefetches_keeps_its_last_batch(spans: Any, seen_by: str) -> None:
    """Seen at the framework's loader (events.framework_loader, as the accelerate integration
    does) or only at the DataLoader it drives (which then ends a batch early and drains): one
    epoch of 3 batches and one validation of 2, every loss in its pass, no extra pass."""
    if seen_by == "framework_loader":
        trained, evaluated = _train_and_validate(events.framework_loader)
    else:
        trained, evaluated = _train_and_validate(lambda iterator, loader: iterator)
    found = spans()
    passes = _passes(found)
    assert [(p["ml.activity"], p["ml.context"], p["ml.pass.batches"]) for p in passes] == [
        ("epoch", "training", 3),
        ("evaluation", "test", 2),
    ]
    assert {p["ml.pass.source"] for p in passes} == {"dataloader"}
    assert passes[1]["ml.eval.loss"] == sum(v * 4 for v in evaluated) / 8
    losses = [
        v
        for a in sorted(
            (_attrs(s) for s in found if s.name == "ml.step_block"),
            key=lambda a: a["ml.step.first"],
        )
        if a["ml.context"] == "training"
        for v in _column(a, "ml.step.loss")
        if v == v
    ]
    assert losses == trained


def test_accelerates_prefetching_loader_is_the_pass(spans: Any) -> None:
    """accelerate's DataLoaderShard (what HF's Trainer iterates) asks its DataLoader for a
    batch ahead; its own iteration is the pass: one step per batch the model saw."""
    from accelerate.data_loader import DataLoaderShard

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoaderShard(TensorDataset(torch.randn(12, 3), torch.randn(12, 1)), batch_size=4)
    trained = []
    for x, y in loader:
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trained.append(loss.item())
    found = spans()
    passes = _passes(found)
    assert [(p["ml.activity"], p["ml.pass.batches"]) for p in passes] == [("epoch", 3)]
    blocks = [_attrs(s) for s in found if s.name == "ml.step_block"]
    assert [_column(a, "ml.step.loss") for a in blocks] == [trained]  # no empty first step
    assert [_column(a, "ml.step.batch_size") for a in blocks] == [[4, 4, 4]]


def test_a_framework_evaluation_keeps_what_is_logged_until_it_ends(spans: Any) -> None:
    """HF's evaluate(): the loader (seen at its DataLoader, prefetching) ends, then the
    framework logs its results, then the evaluation ends. The results are on that pass, and
    its own eval_loss replaces the one the hooks computed (kept as ml.eval.loss)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    F.mse_loss(model(torch.ones(1, 3)), torch.ones(1, 1)).backward()  # a run
    val = DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)), batch_size=4)
    model.eval()
    computed = []
    with events.evaluation("validation", val.dataset):
        with torch.no_grad():
            for x, y in _prefetching(val):
                computed.append(F.mse_loss(model(x), y).item())
        assert events.log("eval_loss", 0.5, step=6, context="validation")
        assert events.log("eval_accuracy", 0.75, step=6, context="validation")
    model.train()
    found = spans()
    (evaluation,) = [_attrs(s) for s in found if s.name == "ml.evaluation"]
    assert evaluation["ml.context"] == "validation" and evaluation["ml.pass.batches"] == 2
    assert evaluation["ml.eval.loss"] == sum(computed) / 2 and evaluation["ml.eval.batches"] == 2
    assert list(zip(evaluation["ml.log.name"], evaluation["ml.log.value"], strict=True)) == [
        ("eval_loss", 0.5),
        ("eval_accuracy", 0.75),
    ]
    assert not any(
        "eval_loss" in _attrs(s).get("ml.log.name", ()) for s in found if s.name != "ml.evaluation"
    )


def test_logged_values_land_on_the_open_activity(spans: Any) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    for step, (x, y) in enumerate(DataLoader(data, batch_size=4)):
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        provtel.log_metric("grad_scale", torch.tensor(0.5), step=step)
    with provtel.context("validation"):
        provtel.log_metrics({"accuracy": 0.75, "f1": 1})
    provtel.log_metric("not a number", "x")  # skipped
    assert events.log("framework_value", 2.5, step=7, context="test")
    found = spans()
    rows = _logged(found)
    assert ("grad_scale", 0.5, 1, "training") in rows
    assert ("accuracy", 0.75, -1, "validation") in rows and ("f1", 1.0, -1, "validation") in rows
    assert ("framework_value", 2.5, 7, "test") in rows
    assert not any(r[0] == "not a number" for r in rows)
    # logged while a step was open (the first one too, before any step of the block had
    # ended): each joined its step's block, in step order; the epoch holds none of them
    (epoch,) = [_attrs(s) for s in found if s.name == "ml.epoch"]
    assert "ml.log.name" not in epoch
    (block,) = [_attrs(s) for s in found if s.name == "ml.step_block"]
    assert list(block["ml.log.name"]) == ["grad_scale", "grad_scale"]
    assert list(block["ml.log.step"]) == [0, 1]


def test_many_hyperparameters_evict_nothing(spans: Any) -> None:
    """A config of 300 keys (a Hydra config, HF's TrainingArguments with model.config) once
    evicted the run span's oldest attributes past the SDK's limit of 128: now every key and every
    run attribute is kept."""
    assert events.params({f"k{i:03d}": i for i in range(300)}, "omegaconf")
    model = nn.Linear(2, 1)
    F.mse_loss(model(torch.ones(1, 2)), torch.ones(1, 1)).backward()
    found = spans()
    run = _attrs(next(s for s in found if s.name == "ml.run"))
    assert run["ml.run.name"] and run["process.command_args"]  # set first: evicted first
    logged = [_attrs(s) for s in found if s.name == "ml.log"]
    assert all(len(a) <= 128 for a in logged)
    values = {k: v for a in logged for k, v in a.items()}
    assert values == {f"ml.hparam.k{i:03d}": i for i in range(300)}


def test_values_logged_after_an_epoch_are_that_epochs(spans: Any) -> None:
    """Lightning reduces ``on_epoch`` values after the epoch's pass is over (they are logged
    when the next epoch starts): such a value is the latest training epoch's, not the run's."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)), batch_size=4)
    for epoch in range(2):
        for x, y in data:
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizer.step()
        assert events.log("train_mae", 10.0 + epoch, step=2 * (epoch + 1), context="training")
    found = spans()
    logged = [_attrs(s) for s in found if s.name == "ml.log" and "ml.log.name" in _attrs(s)]
    assert [(a["ml.epoch"], list(a["ml.log.value"])) for a in logged] == [(0, [10.0]), (1, [11.0])]
    run = _attrs(next(s for s in found if s.name == "ml.run"))
    assert "ml.log.name" not in run


def test_values_of_a_block_dropped_without_steps_are_kept(spans: Any) -> None:
    """A block handed over before any of its steps ended is not sent (no arrays); the values
    logged in it go to its pass instead of being lost."""
    from provtel.instrumentation.torch.steps import Block

    model = nn.Linear(3, 1)
    data = DataLoader(TensorDataset(torch.randn(4, 3), torch.randn(4, 1)), batch_size=4)
    tracker = TorchInstrumentor().tracker
    assert tracker is not None
    for x, y in data:
        F.mse_loss(model(x), y).backward()
        p = tracker.current_pass()
        assert p is not None
        tracker.end_step(tracker.last_boundary + 1)
        tracker.flush_block()
        # a block opened with a value logged in its open step, handed over before that step
        # ended (the step went on elsewhere)
        block = tracker.recorder.block = Block(tracker.recorder.next_index)
        block.logs.append(("kept", 1.5, 0, None, 1))
        tracker.block_pass = p
        tracker.flush_block()
    found = spans()
    (epoch,) = [_attrs(s) for s in found if s.name == "ml.epoch"]
    assert list(epoch["ml.log.name"]) == ["kept"] and list(epoch["ml.log.value"]) == [1.5]


@dataclasses.dataclass
class _Config:
    lr: float = 3e-4
    layers: tuple[int, ...] = (4, 4)
    hub_token: str = "hf_secret"
    nested: dict[str, Any] = dataclasses.field(default_factory=lambda: {"warmup": 10})


def test_configuration_objects_become_hyperparameters(spans: Any) -> None:
    import argparse

    provtel.log_params(_Config(), extra=1)
    assert events.params(argparse.Namespace(seed=3, db_password="p"), "argparse", "cli.")
    model = nn.Linear(2, 1)
    F.mse_loss(model(torch.ones(1, 2)), torch.ones(1, 1)).backward()  # starts the run
    found = spans()
    run = next(s for s in found if s.name == "ml.run")
    assert run.context is not None
    # each batch on a short ml.log span of its own under the run (the run span's attribute
    # limit); the exporter counts them as the run's
    attrs: dict[str, Any] = {}
    for s in found:
        if s.name == "ml.log" and s.parent is not None:
            assert s.parent.span_id == run.context.span_id
            attrs.update(_attrs(s))
    assert not any(k.startswith("ml.hparam.") for k in _attrs(run))
    assert attrs["ml.hparam.lr"] == 3e-4 and list(attrs["ml.hparam.layers"]) == [4, 4]
    assert attrs["ml.hparam.nested.warmup"] == 10 and attrs["ml.hparam.extra"] == 1
    assert attrs["ml.hparam.cli.seed"] == 3
    assert "hf_secret" not in str(attrs) and "ml.hparam.hub_token" in attrs
    assert attrs["ml.hparam.cli.db_password"] != "p"


def test_safetensors_and_artifacts_are_recorded_with_digests(spans: Any, tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    F.mse_loss(model(torch.ones(1, 2)), torch.ones(1, 1)).backward()
    weights = tmp_path / "model.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(weights))
    safetensors.torch.load_file(str(weights))
    safetensors.torch.save_model(model, str(tmp_path / "again.safetensors"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a b c")
    provtel.log_artifact(vocab, kind="dataset")
    torch.save(
        {"model": model.state_dict(), "step": 3, "config": {"api_key": "k", "n": 2}},
        tmp_path / "ckpt.pt",
    )
    found = spans()
    files = [_attrs(s) for s in found if "file.path" in _attrs(s)]
    by_path = {(a["file.path"], a["ml.checkpoint.operation"]): a for a in files}
    saved = by_path[(str(weights), "save")]
    assert saved["ml.artifact.format"] == "safetensors" and saved["ml.artifact.kind"] == "model"
    assert (
        saved["ml.checkpoint.digest"]
        == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    assert saved["file.size"] == weights.stat().st_size
    assert (str(weights), "load") in by_path
    assert (str(tmp_path / "again.safetensors"), "save") in by_path
    artifact = by_path[(str(vocab), "save")]
    assert artifact["ml.artifact.kind"] == "dataset" and artifact["file.size"] == 5
    checkpoint = by_path[(str(tmp_path / "ckpt.pt"), "save")]
    assert checkpoint["ml.checkpoint.entry.step"] == 3
    assert checkpoint["ml.checkpoint.entry.config.n"] == 2
    assert checkpoint["ml.checkpoint.entry.config.api_key"] != "k"


def test_only_weights_join_the_model_chain(spans: Any, tmp_path: Path) -> None:
    """What an HF checkpoint folder holds beside its weights (optimizer, scheduler, RNG state,
    the TrainingArguments object) is an artifact; weights and checkpoint dicts are models."""
    model = nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    F.mse_loss(model(torch.ones(1, 2)), torch.ones(1, 1)).backward()
    optimizer.step()
    payloads: dict[str, Any] = {
        "model.pt": model.state_dict(),
        "module.pt": model,
        "ckpt.pt": {"optimizer": optimizer.state_dict(), "model": model.state_dict(), "step": 1},
        "optimizer.pt": optimizer.state_dict(),
        "scheduler.pt": scheduler.state_dict(),
        "rng_state.pth": {"python": (3, (1, 2), None), "cpu": torch.get_rng_state()},
        "training_args.bin": _Config(),
    }
    for name, payload in payloads.items():
        torch.save(payload, tmp_path / name)
    torch.load(tmp_path / "optimizer.pt")
    torch.load(tmp_path / "model.pt")
    found = spans()
    kinds = {
        (Path(a["file.path"]).name, a["ml.checkpoint.operation"]): a["ml.artifact.kind"]
        for a in (_attrs(s) for s in found)
        if "file.path" in a
    }
    assert kinds == {
        ("model.pt", "save"): "model",
        ("module.pt", "save"): "model",
        ("ckpt.pt", "save"): "model",
        ("optimizer.pt", "save"): "artifact",
        ("scheduler.pt", "save"): "artifact",
        ("rng_state.pth", "save"): "artifact",
        ("training_args.bin", "save"): "artifact",
        ("optimizer.pt", "load"): "artifact",
        ("model.pt", "load"): "model",
    }


def test_saves_inside_a_framework_save_are_not_recorded(spans: Any, tmp_path: Path) -> None:
    """Lightning's checkpoint IO saves into a buffer and writes the bytes itself: inside
    ``events.framework_save()`` that buffer save is no second (in-memory) model."""
    import io

    model = nn.Linear(2, 1)
    F.mse_loss(model(torch.ones(1, 2)), torch.ones(1, 1)).backward()
    target = tmp_path / "epoch=0.ckpt"
    with events.framework_save():
        buffer = io.BytesIO()
        torch.save({"state_dict": model.state_dict()}, buffer)
        target.write_bytes(buffer.getvalue())
    assert events.artifact(target, "model", "save")
    torch.save(model.state_dict(), io.BytesIO())  # outside: recorded, in memory
    found = sorted(spans(), key=lambda s: s.start_time or 0)  # digests end spans off-thread
    files = [_attrs(s) for s in found if s.name.startswith(("ml.checkpoint", "ml.artifact"))]
    assert [(a.get("file.path"), a["ml.checkpoint.in_memory"]) for a in files] == [
        (str(target), False),
        (None, True),
    ]


def test_an_idle_block_is_handed_over_with_a_fake_clock(
    spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [10**12]
    monkeypatch.setattr(tracker_module, "perf", lambda: clock[0])
    instrumentor = TorchInstrumentor()
    tracker = instrumentor.tracker
    assert tracker is not None
    tracker.ensure_run()
    assert tracker._flusher_stop is not None
    tracker._flusher_stop.set()  # this test drives the hand-over itself
    # three optimizer-defined steps without a DataLoader, 1 ms each
    for _ in range(3):
        tracker.ensure_step(clock[0])
        tracker.mark_training(tracker.current_pass())
        clock[0] += 1_000_000
        tracker.recorder.stepped += (1,)
        tracker.optimizer_stepped(clock[0])
        tracker.end_step(clock[0])
    assert not tracker.flush_idle(500_000_000, grace_s=0)  # not idle yet
    clock[0] += 600_000_000
    assert tracker.flush_idle(500_000_000, grace_s=0)
    assert tracker.recorder.block is None
    found = spans()
    (block,) = [_attrs(s) for s in found if s.name == "ml.step_block"]
    assert block["ml.step.count"] == 3
    assert list(block["ml.step.duration"]) == [0.001, 0.001, 0.001]
