"""Realistic OTLP requests (made by the SDK and encoded by its OTLP encoder) and small clients."""

from __future__ import annotations

import atexit
import gzip
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import grpc
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class FixedTrace(RandomIdGenerator):
    """Every root span in one given trace (as provtel's job id generator does for ranks)."""

    def __init__(self, trace_id: int, seed: int) -> None:
        self.trace_id = trace_id
        self.rng = random.Random(seed)

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.rng.getrandbits(64) or 1


def resource(rank: int | None = None, world: int | None = None, **extra: Any) -> Resource:
    """The resource of a training process (a rank of a job when ``rank`` is given)."""
    attrs: dict[str, Any] = {
        "service.name": "train",
        "service.instance.id": f"instance-{rank if rank is not None else 'solo'}",
        "process.pid": 1000 + (rank or 0),
        "process.owner": "alice",
        "host.name": "node-0",
    }
    if rank is not None:
        attrs.update({"ml.job.id": "job-1", "ml.rank": rank})
    if world is not None:
        attrs["ml.world_size"] = world
    attrs.update(extra)
    return Resource.create(attrs)


def training_spans(
    res: Resource, trace_id: int = 0x1234, seed: int = 0, epochs: int = 2, root: bool = True
) -> list[ReadableSpan]:
    """The spans of a small training run: run -> epochs -> step blocks, a checkpoint."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=res, id_generator=FixedTrace(trace_id, seed))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("provtel.instrumentation.torch", "0.1.0")
    run = tracer.start_span(
        "train", attributes={"ml.activity": "run", "ml.hparam.lr": 0.01, "ml.model.class": "Net"}
    )
    from opentelemetry import trace

    with trace.use_span(run, end_on_exit=False):
        for epoch in range(epochs):
            with tracer.start_as_current_span(
                f"epoch {epoch}",
                attributes={
                    "ml.activity": "epoch",
                    "ml.context": "training",
                    "ml.epoch": epoch,
                    "ml.dataset.name": "toy",
                },
            ):
                with tracer.start_as_current_span(
                    "steps",
                    attributes={
                        "ml.activity": "step_block",
                        "ml.context": "training",
                        "ml.epoch": epoch,
                        "ml.step.first": 2 * epoch,
                        "ml.step.count": 2,
                        "ml.step.loss": [1.0 / (2 * epoch + 1), 1.0 / (2 * epoch + 2)],
                    },
                ):
                    pass
    if root:
        run.end()
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def trace_request(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    """What the OTLP span exporters send for ``spans``."""
    return encode_spans(spans)


def metrics_data(res: Resource, steps: int = 4, loss: float = 0.5) -> MetricsData:
    """One SDK collection: a counter, a gauge and a histogram."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=res, metric_readers=[reader])
    meter = provider.get_meter("provtel.instrumentation.torch", "0.1.0")
    meter.create_counter("ml.steps", unit="{step}").add(steps, {"ml.context": "training"})
    meter.create_gauge("ml.loss", unit="1").set(loss, {"ml.context": "training"})
    meter.create_histogram("ml.step.duration", unit="s").record(0.25)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def metrics_request(res: Resource, **kwargs: Any) -> ExportMetricsServiceRequest:
    """What the OTLP metric exporters send for one collection."""
    return encode_metrics(metrics_data(res, **kwargs))


# -- clients ------------------------------------------------------------------------------------


def post(
    port: int,
    path: str,
    body: bytes,
    content_type: str = PROTOBUF,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP POST on a fresh connection: status, headers (lower-case), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})}
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get(port: int, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP GET: status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def gzipped(data: bytes) -> bytes:
    """``data`` gzip-compressed."""
    return gzip.compress(data)


@contextmanager
def grpc_channel(port: int) -> Iterator[grpc.Channel]:
    """An insecure channel to the receiver."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()


def grpc_export(
    channel: grpc.Channel,
    method: str,
    body: bytes,
    metadata: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A raw-bytes unary call (so that malformed payloads can be sent)."""
    call = channel.unary_unary(method, _registered_method=True)
    return bytes(call(body, metadata=metadata, timeout=30))


# -- processes ----------------------------------------------------------------------------------

_LISTENING = re.compile(r"listening grpc=(\S+) http=(\S+) output=(.+)")


class ServeProcess:
    """``provtel serve`` as a subprocess (what a user runs), on loopback and given ports.

    Every one started and not yet stopped is in :attr:`running`; :meth:`stop_all` (run after
    each receiver test by its conftest, and at exit) kills and waits for them, so a test that
    fails before its ``stop()`` leaves no server behind."""

    running: ClassVar[set[ServeProcess]] = set()

    def __init__(self, output: Path, *args: str, grpc_port: int = 0, http_port: int = 0) -> None:
        self.output = output
        self.log = output.parent / f"serve-{time.monotonic_ns()}.log"
        self._log = open(self.log, "w", encoding="utf-8")  # noqa: SIM115 closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "provtel.exporter.cli",
                "serve",
                "--output",
                str(output),
                "--grpc-port",
                str(grpc_port),
                "--http-port",
                str(http_port),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        )
        ServeProcess.running.add(self)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            self.kill()
            raise AssertionError(f"provtel serve did not start: {line!r}\n{self.log_text()}")
        self.grpc_port = int(match.group(1).rsplit(":", 1)[1])
        self.http_port = int(match.group(2).rsplit(":", 1)[1])

    def log_text(self) -> str:
        """What the server logged so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text(encoding="utf-8")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.proc.kill()
        self.proc.wait()
        self._closed()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout`` seconds); the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._closed()
        return self.proc.returncode

    def _closed(self) -> None:
        ServeProcess.running.discard(self)
        self._log.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @classmethod
    def stop_all(cls) -> int:
        """Kill and wait for every receiver still running; how many there were."""
        left = list(cls.running)
        for server in left:
            server.kill()
        return len(left)


atexit.register(ServeProcess.stop_all)


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """A port free now on loopback (for servers that cannot report the one they got)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def documents(output: Path) -> list[Path]:
    """Every finalised document under ``output``."""
    return sorted(output.glob("*/prov.json"))


def normalised(doc_path: Path) -> dict[str, Any]:
    """A document with its run-specific namespace (the folder name) replaced, for comparing
    two documents of the same telemetry written to different folders."""
    doc = json.loads(doc_path.read_text(encoding="utf-8"))
    run_ns = doc["prefix"]["run"]
    return json.loads(json.dumps(doc).replace(run_ns, "https://provtel.org/ns/run/X/"))
