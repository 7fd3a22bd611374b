"""The run store under hostile input: names that never end, quadratic series and keys, memory
held by pending resources, two receivers on one output (issue 12, items 1, 5, 6, 7)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint

from provtel.exporter.prov.otlp import ResourcePoints, convert_metrics, convert_spans, to_json
from provtel.exporter.prov.store import RunStore, create_run_dir
from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.receiver.runs import LOCK_FILE, OutputInUse, Overloaded, Router
from tests.receiver.helpers import ServeProcess, resource, trace_request, training_spans

LONG = "learning_rate_schedule_" * 6  # 138 characters: beyond the 120 of a local name


def bounded(work: Callable[[], Any], seconds: float, what: str) -> Any:
    """Run ``work`` on a daemon thread; fail (instead of hanging the suite) when it does not
    finish in ``seconds`` -- generous bounds for work that is linear now and was endless or
    quadratic before, never a timing assertion."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # re-raised in the test thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{what} did not finish in {seconds} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def long_hparam_spans() -> list[Any]:
    """A run span with two hyperparameters whose names share their first 130 characters."""
    spans = training_spans(resource(), epochs=1)
    for span in spans:
        if span.attributes.get("ml.activity") == "run":
            attrs = dict(span.attributes)
            attrs[f"ml.hparam.{LONG}warmup"] = 100
            attrs[f"ml.hparam.{LONG}decay"] = 0.5
            span._attributes = attrs  # what a client with long names sends
    return spans


def hparams(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        e["prov:label"]: (k, e["prov:value"])
        for k, e in doc["entity"].items()
        if e["prov:type"] == "provml:HyperParameter"
    }


def test_two_long_hyperparameter_names_through_convert(tmp_path: Path) -> None:
    source = tmp_path / "otlp.jsonl"
    source.write_text(to_json(trace_request(long_hparam_spans())) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "convert", str(source), "-o",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (doc_path,) = (tmp_path / "out").glob("*/prov.json")
    found = hparams(assert_valid(doc_path))
    assert {name: value for name, (_, value) in found.items()} == {
        "lr": 0.01,
        f"{LONG}warmup": 100,
        f"{LONG}decay": 0.5,
    }
    ids = [entity for entity, _ in found.values()]
    assert len(set(ids)) == 3 and all(len(i) <= len("run:") + 120 for i in ids)


def test_two_long_hyperparameter_names_through_the_receivers_finaliser(tmp_path: Path) -> None:
    now = [0.0]
    router = Router(tmp_path / "out", grace_s=1, idle_s=10, clock=lambda: now[0])
    router.add_spans(convert_spans(trace_request(long_hparam_spans())).records)
    now[0] += 2
    (doc,) = bounded(router.tick, 60, "the finaliser")
    router.close()
    assert {f"{LONG}warmup", f"{LONG}decay"} <= set(hparams(assert_valid(doc)))


def gauge_request(n: int, attribute: Callable[[int], str]) -> ExportMetricsServiceRequest:
    """One request with ``n`` points of one gauge, each a series of its own."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="gpu")))
    metric = Metric(name="hw.gpu.utilization", unit="1", gauge=Gauge())
    for i in range(n):
        metric.gauge.data_points.append(
            NumberDataPoint(
                time_unix_nano=1_795_000_000_000_000_000 + i,
                as_double=i / n,
                attributes=[KeyValue(key="hw.id", value=AnyValue(string_value=attribute(i)))],
            )
        )
    rm.scope_metrics.add().metrics.append(metric)
    return request


def test_a_request_of_40k_new_series_is_linear(tmp_path: Path) -> None:
    # Series whose labels share their first 90 characters: every file name collides with the
    # previous ones until a suffix makes it unique.
    shared = "device_" * 13
    groups = convert_metrics(gauge_request(40_000, lambda i: f"{shared}{i}")).groups
    store = RunStore(create_run_dir(tmp_path, "gauges"))
    for group in groups:
        bounded(lambda g=group: store.add_metric_points(g.points), 120, "40k new series")
    assert store.series_count == 40_000
    files = list((store.dir / "metrics").glob("*.csv"))
    assert len(files) == 40_000  # one file each, none overwritten


def test_thousands_of_attribute_keys_colliding_after_sanitising(tmp_path: Path) -> None:
    store = RunStore(create_run_dir(tmp_path, "keys"))
    keys = {f"{'k' * 130}{i}": i for i in range(8000)}  # all the same 120-character name
    record = convert_spans(trace_request(training_spans(resource(), epochs=1))).records[0]
    record["attributes"].update(keys)
    store.add_spans([record])
    document = bounded(store.finalize, 120, "8000 colliding attribute keys")
    doc = assert_valid(document, round_trips=False)
    span_id = record["span_id"]
    (activity,) = [a for a in doc["activity"].values() if a.get("otel:span_id") == span_id]
    values = sorted(v for k, v in activity.items() if k.startswith("otel:kkk"))
    assert values == list(range(8000))  # every key kept, none overwritten


def metrics_of(service: str, attribute_bytes: int) -> list[ResourcePoints]:
    big = {"service.name": service, "service.instance.id": service, "blob": "x" * attribute_bytes}
    return [
        ResourcePoints(
            resource=big,
            points=[
                {
                    "resource": big,
                    "scope": {"name": "m", "version": None},
                    "name": "ml.steps",
                    "unit": "1",
                    "description": "",
                    "type": "sum",
                    "attributes": {},
                    "start": 1,
                    "time": 2,
                    "value": 3,
                }
            ],
        )
    ]


def test_pending_resources_are_bounded_in_bytes_and_keep_no_attributes(tmp_path: Path) -> None:
    router = Router(tmp_path / "out", max_pending_bytes=3 << 20)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        accepted = 0
        with pytest.raises(Overloaded, match="pending"):
            for n in range(40):
                router.add_metrics(metrics_of(f"svc-{n}", 300_000))  # 300 kB of attributes
                accepted += 1
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 3 MiB of pending files hold about ten such resources; the eleventh is "retry later".
    assert 5 <= accepted <= 11
    assert held < 1_000_000, f"{held} bytes held for {accepted} pending resources"
    pending = sorted((tmp_path / "out" / ".pending").glob("*.jsonl"))
    assert len(pending) == accepted  # the refused request wrote nothing
    router.close()


def test_two_receivers_on_one_output_the_second_fails_at_start(tmp_path: Path) -> None:
    output = tmp_path / "out"
    first = ServeProcess(output, "--grace", "0.5")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "provtel.exporter.cli", "serve", "--output", str(output),
             "--grpc-port", "0", "--http-port", "0"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        (line,) = [ln for ln in second.stderr.splitlines() if "provtel serve:" in ln]
        assert str(output) in line and "in use by another provtel receiver" in line
        assert f"pid {first.proc.pid}" in line
        empty = tmp_path / "empty.jsonl"
        empty.write_text("", encoding="utf-8")
        convert = subprocess.run(
            [sys.executable, "-m", "provtel.exporter.cli", "convert", str(empty), "-o",
             str(output)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert convert.returncode == 2 and "in use by another provtel receiver" in convert.stderr
    finally:
        assert first.stop() == 0
        assert first.proc.stdout is not None
        first.proc.stdout.close()
    # Once the first one stopped, the folder is free again.
    router = Router(output)
    with pytest.raises(OutputInUse):
        Router(output)
    assert (output / LOCK_FILE).read_text() == f"pid {os.getpid()}\n"
    router.close()
    assert not (output / LOCK_FILE).exists()  # a stopped receiver leaves no lock file


def _serve_on_a_full_disk(output: Path, limit: int, log: Path) -> subprocess.Popen[str]:
    """``provtel serve`` whose files may grow to ``limit`` bytes (RLIMIT_FSIZE: writes past it
    land partially, then fail, as on a full disk -- no root, no mount)."""
    import resource as rlimit
    import signal

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        rlimit.setrlimit(rlimit.RLIMIT_FSIZE, (limit, limit))

    with open(log, "w", encoding="utf-8") as err:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "provtel.exporter.cli", "serve", "--output", str(output),
             "--grpc-port", "off", "--http-port", "0", "--grace", "0.3"],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            preexec_fn=full_disk,
        )  # fmt: skip


def _close(proc: subprocess.Popen[str]) -> int:
    """Stop the server (SIGTERM; SIGKILL if it takes 30 s) and wait for it; its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def _http_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening" in line, line
    return int(line.split("http=")[1].split()[0].rsplit(":", 1)[1])


def test_a_request_refused_on_a_full_disk_never_corrupts_the_next(tmp_path: Path) -> None:
    """Issue 12, item 2, receiver: the refused request's partial line is cut, a restarted
    receiver reopens the run (the torn bytes split a multi-byte character), and every
    acknowledged span is in the document."""
    from tests.receiver.helpers import post, wait_for

    output = tmp_path / "out"
    first = training_spans(resource(), trace_id=0xF011, epochs=1, root=False)
    big = training_spans(resource(), trace_id=0xF011, seed=7, epochs=1, root=False)
    for span in big:
        span._attributes = {**dict(span.attributes), "note": "переполнение 🔥 " * 20_000}
    last = training_spans(resource(), trace_id=0xF011, seed=9, epochs=1)

    proc = _serve_on_a_full_disk(output, 64_000, tmp_path / "serve1.log")
    try:
        port = _http_port(proc)
        assert post(port, "/v1/traces", trace_request(first).SerializeToString())[0] == 200
        refused = post(port, "/v1/traces", trace_request(big).SerializeToString())[0]
        assert refused in (429, 503)  # "retry later": the client keeps the spans
    finally:
        status = _close(proc)
    assert status == 0
    (journal_path,) = output.glob("*/journal.jsonl")
    assert journal_path.read_bytes().endswith(b"\n")

    proc = _serve_on_a_full_disk(output, 1 << 40, tmp_path / "serve2.log")  # space freed
    try:
        port = _http_port(proc)
        # The client retries the refused request, then sends the rest.
        assert post(port, "/v1/traces", trace_request(big).SerializeToString())[0] == 200
        assert post(port, "/v1/traces", trace_request(last).SerializeToString())[0] == 200
        doc_path = wait_for(lambda: list(output.glob("*/prov.json")), what="the document")[0]
    finally:
        _close(proc)
    doc = assert_valid(doc_path, round_trips=False)
    sent = {f"{s.context.span_id:016x}" for s in first + big + last}
    assert {a["otel:span_id"] for a in doc["activity"].values() if "otel:span_id" in a} >= sent
    assert "Traceback" not in (tmp_path / "serve2.log").read_text()


def test_runs_with_many_series_stay_within_the_descriptor_limit(tmp_path: Path) -> None:
    """Series files stay open between requests (one write per point), in one pool for all runs
    bounded by the process's descriptor limit: three runs of 100 series each under
    ``ulimit -n 128`` take every point (a pool per run would run out of descriptors)."""
    import resource as rlimit

    from opentelemetry.sdk.resources import Resource

    from tests.receiver.helpers import post

    def few_descriptors() -> None:
        rlimit.setrlimit(rlimit.RLIMIT_NOFILE, (128, 128))

    output = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "provtel.exporter.cli", "serve", "--output", str(output),
         "--grpc-port", "off", "--http-port", "0", "--grace", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        preexec_fn=few_descriptors,
    )  # fmt: skip
    try:
        port = _http_port(proc)
        for run in range(3):
            attrs = {"service.name": "train", "service.instance.id": f"instance-{run}"}
            spans = training_spans(Resource.create(attrs), trace_id=0xD0 + run, epochs=1)
            assert post(port, "/v1/traces", trace_request(spans).SerializeToString())[0] == 200
        for request in range(3):
            for run in range(3):
                body = ExportMetricsServiceRequest()
                rm = body.resource_metrics.add()
                for key, value in (
                    ("service.name", "train"),
                    ("service.instance.id", f"instance-{run}"),
                ):
                    rm.resource.attributes.add(key=key).value.string_value = value
                metric = rm.scope_metrics.add().metrics.add(name="hw.power", unit="W")
                for device in range(100):
                    point = metric.gauge.data_points.add(
                        time_unix_nano=1_795_000_000_000_000_000 + request, as_double=1.5
                    )
                    point.attributes.add(key="hw.id").value.string_value = f"dev-{device}"
                status = post(port, "/v1/metrics", body.SerializeToString())[0]
                assert status == 200, (request, run, status)
    finally:
        assert _close(proc) == 0
    for run_dir in [d for d in output.iterdir() if (d / "journal.jsonl").exists()]:
        series = sorted((run_dir / "metrics").glob("hw.power*.csv"))
        assert len(series) == 100
        assert all(len(s.read_text().splitlines()) == 1 + 3 for s in series)  # header + 3 rows
