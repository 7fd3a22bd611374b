"""Benchmark: ``provtel serve`` ingest with 8 concurrent OTLP exporters, at zero loss.

Target (issues 6, 12): >= 50k spans/s on the 2-core reference machine. Run through
``make bench`` / ``python bench/run_all.py bench_receiver``, or alone::

    .venv/bin/python bench/bench_receiver.py [--quick] [--clients 8]

It prints one Markdown section on stdout (the ``bench/run_all.py`` convention) and progress on
stderr; it exits 1 when the target fails or anything acknowledged is missing.

Method:

* ``provtel serve`` runs as its own process (``python -m provtel.exporter.cli serve``, gRPC and
  HTTP on loopback, finalisation timers out of the way).
* The workload is built once, with the SDK itself: spans made by a ``TracerProvider`` (the
  resource of a rank of a training job: service, host, process, ``ml.job.*``/``ml.rank``
  attributes; each span with 5 attributes) and encoded by the
  OTLP exporter's encoder (``encode_spans``) into requests of 512 spans (the batch processor's
  default); metric requests hold 100 series (10 instruments x 10 attribute sets, like an SDK
  export of hardware readings), one point each, as ``encode_metrics`` writes them.
* 8 client processes, each a rank of one job (one trace: the worst case, one run store), half
  over OTLP/gRPC (grpcio channel, ``TraceService/Export``) and half over OTLP/HTTP (``requests``
  session, ``application/x-protobuf``), send their pre-encoded requests back to back, as OTLP
  exporters with a full queue do. Pre-encoding keeps the clients' CPU use low so that the
  receiver, not the encoder, is measured. A client retries "retry later" answers after the
  delay the receiver gives (never happened at the default bounds).
* Time: from the moment all clients start sending to the last acknowledgement. Server CPU: its
  user+system time over the same interval (``/proc``).
* Zero loss: after the server is stopped (SIGTERM: journals closed, nothing finalised), every
  acknowledged span must be a line of the run's journal and every acknowledged point a row of a
  series file. Then the run is finalised (``RunStore.reopen(...).finalize()``) and timed.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SPANS_PER_S = 50_000
BATCH = 512
#: py-spy's sampling rate with --profile. It runs on the same 2 cores as the receiver and the
#: clients: at 250 Hz its own process took 1.0-2.2 s of CPU in a 3-5 s span phase, at 100 Hz
#: 0.8-1.4 s, still hundreds of samples per busy thread for the shares.
PY_SPY_HZ = 100


# -- workload ---------------------------------------------------------------------------------


def _resource(rank: int, world: int) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create(
        {
            "service.name": "train",
            "service.version": "1.0",
            "host.name": "node-0",
            "host.arch": "x86_64",
            "os.type": "linux",
            "process.pid": 10_000 + rank,
            "process.owner": "alice",
            "process.runtime.name": "cpython",
            "process.runtime.version": "3.11.7",
            "process.command_args": ["python", "train.py", "--epochs", "10"],
            "ml.job.id": "bench-job",
            "ml.job.scheduler": "torchrun",
            "ml.rank": rank,
            "ml.world_size": world,
        }
    )


def build_span_requests(rank: int, world: int, n_spans: int) -> list[bytes]:
    """Pre-encoded trace requests of one rank: ``n_spans`` spans in batches of 512."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _JobIds(RandomIdGenerator):
        # All ranks share the job's trace id, as provtel's JobIdGenerator does.
        def generate_trace_id(self) -> int:
            return 0x5EED_0000_0000_0000_0000_0000_0000_0001

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource(rank, world), id_generator=_JobIds())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("provtel.instrumentation.torch", "0.1.0")
    with tracer.start_as_current_span("train", attributes={"ml.activity": "run"}):
        for i in range(n_spans - 1):
            with tracer.start_as_current_span(
                "steps",
                attributes={
                    "ml.activity": "step_block",
                    "ml.context": "training",
                    "ml.epoch": i // 100,
                    "ml.step.first": i * 10,
                    "ml.step.count": 10,
                },
            ):
                pass
    spans = memory.get_finished_spans()
    provider.shutdown()
    return [
        encode_spans(spans[i : i + BATCH]).SerializeToString() for i in range(0, len(spans), BATCH)
    ]


def build_metric_requests(rank: int, world: int, n_requests: int) -> list[bytes]:
    """Pre-encoded metric requests of one rank: 100 series (10 gauges x 10 attribute sets),
    one point each, a collection per request."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=_resource(rank, world), metric_readers=[reader])
    meter = provider.get_meter("provtel.instrumentation.hardware", "0.1.0")
    gauges = [meter.create_gauge(f"bench.reading.{i}", unit="W") for i in range(10)]
    out = []
    for r in range(n_requests):
        for g, gauge in enumerate(gauges):
            for device in range(10):
                gauge.set(r * 0.5 + g + device, {"hw.id": f"dev-{device}", "hw.type": "gpu"})
        data = reader.get_metrics_data()
        assert data is not None
        out.append(encode_metrics(data).SerializeToString())
    provider.shutdown()
    return out


# -- a client process -------------------------------------------------------------------------


def client(args: argparse.Namespace) -> int:
    """Send pre-encoded requests; print what was acknowledged as JSON."""
    payloads: list[bytes] = pickle.loads(Path(args.payload).read_bytes())
    service = {
        "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    }[args.signal]
    retries = 0
    if args.protocol == "grpc":
        import grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{args.port}")
        export = channel.unary_unary(service, _registered_method=True)

        def send(body: bytes) -> float | None:
            try:
                export(body, timeout=60)
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                    return 0.5
                raise
            return None
    else:
        import requests

        session = requests.Session()
        url = f"http://127.0.0.1:{args.port}/v1/{args.signal}"
        headers = {"Content-Type": "application/x-protobuf"}

        def send(body: bytes) -> float | None:
            resp = session.post(url, data=body, headers=headers, timeout=60)
            if resp.status_code in (429, 503):
                return float(resp.headers.get("Retry-After", "1"))
            resp.raise_for_status()
            return None

    send(b"")  # connect before the clock starts (an empty request is valid OTLP)
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.001)
    start = time.perf_counter()
    for body in payloads:
        while (delay := send(body)) is not None:
            retries += 1
            time.sleep(delay)
    elapsed = time.perf_counter() - start
    print(json.dumps({"requests": len(payloads), "retries": retries, "seconds": elapsed}))
    return 0


# -- the measurement --------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(output: Path) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provtel.exporter.cli",
            "serve",
            "--output",
            str(output),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--grace",
            "3600",
            "--idle-timeout",
            "3600",
            "--max-series",
            "0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise SystemExit(f"provtel serve did not start: {line!r}")
    parts = dict(p.split("=", 1) for p in line.split() if "=" in p)
    return proc, int(parts["grpc"].rsplit(":", 1)[1]), int(parts["http"].rsplit(":", 1)[1])


# Where the server's CPU goes, by the innermost frame of ours (or a library's) on the stack.
_CATEGORIES = [
    ("journal: JSON encoding", ("journal.py", "json/encoder.py", "json/__init__.py")),
    ("journal: store / series rows", ("prov/store.py", "prov/series.py", "prov/mapping.py")),
    ("routing (receiver/runs.py)", ("receiver/runs.py",)),
    ("check at ingest / conversion (prov/otlp.py)", ("prov/otlp.py",)),
    ("decode (protobuf, chunking)", ("receiver/decode.py", "ParseFromString", "FromString")),
    ("HTTP transport (tornado, asyncio)", ("tornado/", "asyncio/", "http_server.py")),
    ("gRPC transport (grpcio)", ("grpc/", "grpc_server.py", "cygrpc")),
]


# Innermost frames of a thread that waits (py-spy --nonblocking cannot always tell): the event
# loop's select, grpcio's completion-queue poll (a C call in _serve), a lock or queue wait.
_WAITING = (
    "select (selectors",
    "poll (",
    "wait (threading",
    "_worker (concurrent",
    "get (queue",
    "_serve (grpc/_server.py",
    "Condition.__enter__ (threading",
)


def _profile_summary(raw: Path) -> list[tuple[str, float]]:
    """Share of the samples per category, from py-spy's ``--format raw`` output (collapsed
    stacks: ``frame;frame;... count``); a sample goes to the category of the innermost
    matching frame."""
    totals: dict[str, int] = {}
    samples = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if any(w in frames[-1] for w in _WAITING):
            continue  # a thread blocked (py-spy cannot always tell): not CPU
        samples += n
        category = "other (threads, logging, GC)"
        for frame in reversed(frames):
            hit = next((name for name, keys in _CATEGORIES if any(k in frame for k in keys)), None)
            if hit is not None:
                category = hit
                break
        totals[category] = totals.get(category, 0) + n
    return sorted(((k, v / samples) for k, v in totals.items()), key=lambda kv: -kv[1])


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        return None
    return subprocess.Popen(
        [str(exe), "record", "--pid", str(pid), "--format", "raw", "--rate", str(PY_SPY_HZ),
         "--nonblocking", "--threads", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _phase(
    signal_name: str,
    payloads: list[list[bytes]],
    ports: tuple[int, int],
    server_pid: int,
    tmp: Path,
    profile: Path | None = None,
) -> dict[str, Any]:
    go = tmp / f"go-{signal_name}"
    procs = []
    for i, requests in enumerate(payloads):
        payload = tmp / f"{signal_name}-{i}.pickle"
        payload.write_bytes(pickle.dumps(requests))
        protocol = "grpc" if i % 2 == 0 else "http"
        ready = tmp / f"ready-{signal_name}-{i}"
        procs.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--client",
                        "--signal",
                        signal_name,
                        "--protocol",
                        protocol,
                        "--port",
                        str(ports[0] if protocol == "grpc" else ports[1]),
                        "--payload",
                        str(payload),
                        "--ready",
                        str(ready),
                        "--go",
                        str(go),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                ),
                ready,
            )
        )
    while not all(ready.exists() for _, ready in procs):
        if any(p.poll() is not None for p, _ in procs):
            raise SystemExit("a client died before starting")
        time.sleep(0.01)
    spy = _py_spy(server_pid, profile) if profile is not None else None
    if spy is not None:
        time.sleep(1.0)  # py-spy attaches
    cpu0 = _cpu_seconds(server_pid)
    start = time.perf_counter()
    go.touch()
    results = []
    for proc, _ in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a {signal_name} client failed")
        results.append(json.loads(out))
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds(server_pid) - cpu0
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        spy.wait(timeout=60)
    return {
        "seconds": elapsed,
        "load": os.getloadavg()[0],
        "server_cpu": cpu,
        "requests": sum(r["requests"] for r in results),
        "retries": sum(r["retries"] for r in results),
        "client_seconds": statistics.median(r["seconds"] for r in results),
    }


def _peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith(field + ":")).split()[1]) / 1024


def _length_delimited(tag: int, payload: bytes) -> bytes:
    length, prefix = len(payload), bytearray([tag])
    while length > 0x7F:
        prefix.append(length & 0x7F | 0x80)
        length >>= 7
    prefix.append(length)
    return bytes(prefix) + payload


def _empty_spans_request(n: int) -> bytes:
    """``resource_spans { scope_spans { spans {} x n } }``: 2 bytes a span on the wire."""
    return _length_delimited(0x0A, _length_delimited(0x12, b"\x12\x00" * n))


def memory_phase(tmp: Path) -> dict[str, float]:
    """Peak RSS of a fresh receiver (default limits) under the issue's two worst cases: one
    4 MB request of 2M empty spans, then 8 concurrent maximum-size (4 MiB) requests of real
    spans, half over HTTP, half over gRPC. Returns MiB: baseline, after each, and the bound."""
    import concurrent.futures

    import grpc
    import requests

    from provtel.exporter.receiver.core import ReceiverConfig
    from provtel.exporter.receiver.limits import ServeLimits

    config, limits = ReceiverConfig(), ServeLimits()
    bound = 2 * config.max_inflight_bytes + limits.decode_budget_bytes
    big = []
    for rank in range(8):
        # one request of as many bench spans as fit in max_message_bytes
        requests_ = build_span_requests(rank, 8, 20_000)
        joined = b"".join(requests_)  # concatenated requests are one request (protobuf merge)
        while len(joined) > config.max_message_bytes:
            requests_.pop()
            joined = b"".join(requests_)
        big.append(joined)
    server, grpc_port, http_port = _start_server(tmp / "memory")
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    trace_service = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    try:
        requests.post(url, data=b"", headers=headers, timeout=60).raise_for_status()
        baseline = _peak_rss_mib(server.pid, "VmRSS")
        empty = _empty_spans_request(2_000_000)
        requests.post(url, data=empty, headers=headers, timeout=600).raise_for_status()
        after_empty = _peak_rss_mib(server.pid)
        channel = grpc.insecure_channel(
            f"127.0.0.1:{grpc_port}",
            options=[("grpc.max_send_message_length", config.max_message_bytes)],
        )
        export = channel.unary_unary(trace_service, _registered_method=True)

        def send(i: int) -> None:
            while True:
                if i % 2:
                    resp = requests.post(url, data=big[i], headers=headers, timeout=600)
                    if resp.status_code != 503:
                        resp.raise_for_status()
                        return
                else:
                    try:
                        export(big[i], timeout=600)
                        return
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                time.sleep(0.5)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(8)))
        after_big = _peak_rss_mib(server.pid)
        channel.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return {
        "baseline": baseline,
        "empty": after_empty,
        "big": after_big,
        "big_bytes": sum(len(b) for b in big) / 8 / 2**20,
        "bound": baseline + bound / 2**20,
        "inflight": config.max_inflight_bytes / 2**20,
        "budget": limits.decode_budget_bytes / 2**20,
    }


def in_process_phase(
    span_payloads: list[list[bytes]], metric_payloads: list[list[bytes]], tmp: Path
) -> dict[str, float]:
    """CPU per item of the receiver's own work without the transports: the same requests,
    ranks interleaved as they arrive, handed to ``Ingest.export`` (decode, convert, route,
    journal) in this process, one after another. Returns µs per span and per point."""
    from provtel.exporter.receiver.core import Receiver, ReceiverConfig
    from provtel.exporter.receiver.decode import Ingest

    config = ReceiverConfig(
        output_dir=tmp / "in-process", grace_s=3600, idle_timeout_s=3600, max_series=0
    )
    receiver = Receiver(config)
    ingest = Ingest(receiver)
    out = {}
    try:
        for signal_name, payloads in (("traces", span_payloads), ("metrics", metric_payloads)):
            order = [p[i] for i in range(max(map(len, payloads))) for p in payloads if i < len(p)]
            start = time.process_time()
            for body in order:
                ingest.export(signal_name, body)
            cpu = time.process_time() - start
            items = receiver.stats.spans if signal_name == "traces" else receiver.stats.points
            out[signal_name] = cpu / items * 1e6
    finally:
        receiver.close()
    return out


def _journal_spans(run_dir: Path) -> set[str]:
    """The span ids a run's journal holds (span records and the receiver's ``otlp_spans``
    lines alike, read as finalisation reads them)."""
    from provtel.exporter.prov import journal

    problems: list[str] = []
    ids = {r.data["span_id"] for r in journal.read(run_dir / "journal.jsonl", problems)
           if r.kind == journal.SPAN}  # fmt: skip
    if problems:
        raise SystemExit(f"unreadable journal lines: {problems[:3]}")
    return ids


def _series_rows(run_dir: Path) -> int:
    rows = 0
    for csv in (run_dir / "metrics").glob("*.csv"):
        with open(csv, encoding="utf-8") as f:
            rows += sum(1 for _ in f) - 1
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the workload")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy (pip install py-spy) and print where CPU goes",
    )
    parser.add_argument(
        "--keep-profiles",
        type=Path,
        metavar="DIR",
        help="with --profile: also keep py-spy's raw samples (collapsed stacks) in DIR",
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    for name in ("--signal", "--protocol", "--port", "--payload", "--ready", "--go"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client(args)

    n_clients = args.clients
    spans_per_client = 2_048 if args.quick else 20_480
    metric_requests = 40 if args.quick else 400
    print(f"[bench_receiver] building the workload ({n_clients} ranks) ...", file=sys.stderr)
    span_payloads = [build_span_requests(r, n_clients, spans_per_client) for r in range(n_clients)]
    metric_payloads = [
        build_metric_requests(r, n_clients, metric_requests) for r in range(n_clients)
    ]
    n_spans = n_clients * spans_per_client
    n_points = n_clients * metric_requests * 100
    span_bytes = sum(len(b) for p in span_payloads for b in p)

    with tempfile.TemporaryDirectory(prefix="provtel-bench-receiver-") as tmp_name:
        tmp = Path(tmp_name)
        output = tmp / "prov"
        server, grpc_port, http_port = _start_server(output)
        try:
            print("[bench_receiver] spans ...", file=sys.stderr)
            ports = (grpc_port, http_port)
            spy = {s: tmp / f"{s}.pyspy" if args.profile else None for s in ("traces", "metrics")}
            spans = _phase("traces", span_payloads, ports, server.pid, tmp, spy["traces"])
            print("[bench_receiver] metric points ...", file=sys.stderr)
            points = _phase("metrics", metric_payloads, ports, server.pid, tmp, spy["metrics"])
            profiles = {
                s: _profile_summary(p) for s, p in spy.items() if p is not None and p.exists()
            }
            if args.keep_profiles is not None:
                args.keep_profiles.mkdir(parents=True, exist_ok=True)
                for p in spy.values():
                    if p is not None and p.exists():
                        (args.keep_profiles / p.name).write_bytes(p.read_bytes())
            rss_kib = int(
                next(
                    line.split()[1]
                    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                    if line.startswith("VmHWM:")
                )
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        print("[bench_receiver] peak memory ...", file=sys.stderr)
        memory = memory_phase(tmp)
        print("[bench_receiver] in-process ...", file=sys.stderr)
        inproc = in_process_phase(span_payloads, metric_payloads, tmp)
        (run_dir,) = [d for d in output.iterdir() if (d / "journal.jsonl").exists()]
        journaled = _journal_spans(run_dir)
        rows = _series_rows(run_dir)
        from provtel.exporter.prov.store import RunStore

        start = time.perf_counter()
        document = RunStore.reopen(run_dir).finalize()
        finalise_s = time.perf_counter() - start
        doc_mib = document.stat().st_size / 2**20

    lost_spans = n_spans - len(journaled)
    lost_points = n_points - rows
    span_rate = n_spans / spans["seconds"]
    point_rate = n_points / points["seconds"]
    ok = lost_spans == 0 and lost_points == 0 and span_rate >= TARGET_SPANS_PER_S

    print("## OTLP receiver (`provtel serve`): ingest with concurrent exporters\n")
    print(
        f"Target (issues 6, 12): >= {TARGET_SPANS_PER_S:,} spans/s at zero loss on this machine. "
        f"`provtel serve` runs as its own process; {n_clients} client processes, each a rank of "
        "one job (one trace, so one run store: the worst case), half over OTLP/gRPC and half "
        "over OTLP/HTTP protobuf, send pre-encoded requests back to back. Requests were "
        "encoded by the SDK's OTLP encoder from real SDK spans (512 spans a request, each "
        "span with 5 attributes; a resource of 17 attributes) and from SDK metric "
        "collections (100 series a request, one point each); pre-encoding keeps the clients' "
        "CPU low so that the receiver is what is measured. Time runs from the start signal to "
        "the last acknowledgement. Server CPU is the receiver process's user+system time over "
        "that interval (1.0 s per s = one core). Zero loss: after SIGTERM, every acknowledged "
        "span is in the run's journal (its span ids, read back as finalisation reads them) "
        "and every acknowledged point a row of a series file.\n"
    )
    print(
        "| phase | items | requests | wall s | items/s | server CPU s | CPU per item µs "
        "| retries | lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| spans | {n_spans:,} | {spans['requests']:,} | {spans['seconds']:.2f} | "
        f"{span_rate:,.0f} | {spans['server_cpu']:.2f} | "
        f"{spans['server_cpu'] / n_spans * 1e6:.1f} | {spans['retries']} | {lost_spans} |"
    )
    print(
        f"| metric points | {n_points:,} | {points['requests']:,} | {points['seconds']:.2f} | "
        f"{point_rate:,.0f} | {points['server_cpu']:.2f} | "
        f"{points['server_cpu'] / n_points * 1e6:.1f} | {points['retries']} | {lost_points} |"
    )
    print(f"| in-process, no transport: spans | {n_spans:,} | | | | | {inproc['traces']:.1f} | | |")
    print(
        f"| in-process, no transport: metric points | {n_points:,} | | | | | "
        f"{inproc['metrics']:.1f} | | |"
    )
    print(
        "\nThe in-process rows hand the same requests, one after another, straight to what both "
        "transports call (`Ingest.export`: decode, check, route, journal) in the benchmark's "
        "own process: the receiver's work without HTTP or gRPC, and without the contention of "
        "concurrent requests."
    )
    cores = os.cpu_count() or 1
    print(
        f"\nMachine load (1-minute load average at the end of each phase, {cores} cores): "
        f"spans {spans['load']:.1f}, metric points {points['load']:.1f}. On a shared machine "
        "a load above the core count means the receiver got only part of a core: judge the "
        "CPU per item, which the load inflates far less than the throughput."
    )
    print(
        f"\nRequests: {span_bytes / len([b for p in span_payloads for b in p]) / 1024:.0f} KiB "
        f"per trace request on average. Receiver peak RSS: {rss_kib / 1024:.0f} MiB. "
        f"Finalising the run afterwards ({n_spans:,} spans, {n_points:,} points in "
        f"{n_clients * 100} series): {finalise_s:.1f} s, a {doc_mib:.0f} MiB `prov.json` "
        "(the spans are converted from OTLP there, no longer at ingest).\n"
    )
    print(
        "\nPeak memory of a fresh receiver with the default limits (`--max-inflight-mib "
        f"{memory['inflight']:.0f}`, `--decode-budget-mib {memory['budget']:.0f}`); the bound "
        "is the baseline + 2 × max in-flight (request bodies and their chunk copies) + the "
        "decode budget (worst-case decoded messages and their records):\n"
    )
    print("| case | peak RSS MiB | bound MiB | within |")
    print("|---|---:|---:|---|")
    print(f"| baseline (after start) | {memory['baseline']:.0f} | | |")
    for name, key in (
        ("one 4 MB request of 2,000,000 empty spans", "empty"),
        (
            f"8 concurrent maximum-size requests ({memory['big_bytes']:.1f} MiB of spans each, "
            "4 HTTP + 4 gRPC), after the above",
            "big",
        ),
    ):
        within = "yes" if memory[key] <= memory["bound"] else "**no**"
        print(f"| {name} | {memory[key]:.0f} | {memory['bound']:.0f} | {within} |")
    ok = ok and memory["big"] <= memory["bound"]
    for signal_name, shares in profiles.items():
        per_item = (spans if signal_name == "traces" else points)["server_cpu"] / (
            n_spans if signal_name == "traces" else n_points
        )
        print(
            f"\nWhere the server's CPU goes ({signal_name}; py-spy samples of all threads at "
            f"{PY_SPY_HZ} Hz):\n"
        )
        print("| part | share | ≈ µs per item |")
        print("|---|---:|---:|")
        for name, share in shares:
            print(f"| {name} | {share:.0%} | {share * per_item * 1e6:.1f} |")
    span_cpu_us = spans["server_cpu"] / n_spans * 1e6
    point_cpu_us = points["server_cpu"] / n_points * 1e6
    print(
        f"\nCPU bound: at {span_cpu_us:.1f} µs of server CPU per span, one core the receiver "
        f"had to itself would take about {1e6 / span_cpu_us:,.0f} spans/s "
        f"({1e6 / point_cpu_us:,.0f} points/s at {point_cpu_us:.1f} µs per point); the target "
        f"needs <= {1e6 / TARGET_SPANS_PER_S:.0f} µs per span. The receiver is one Python process "
        "(one GIL), so a second core adds little."
    )
    print(
        "\nHow the receiver spends less (issue 12): spans are not converted at ingest. A trace "
        "request is decoded with its spans' attributes left as encoded `KeyValue` bytes "
        "(`otlp.SpansRequest`) and checked as conversion would check it "
        "(`otlp.scan_spans`: ids, times, attributes -- each distinct encoded attribute decoded "
        "once, then found in a bounded set of plain ones); a request of one trace with nothing "
        "rejected is journaled as the bytes it came as (one base64 `otlp_spans` line), "
        "others as each trace's spans encoded anew by upb; spans become records only when the "
        "journal is read (finalisation, restart, recovery, merge: `journal.spans_of`). "
        "Requests holding per-step columns or logged values (series rows written on arrival) "
        "are still converted at ingest, as are OTLP/JSON requests. Metric points: journal "
        "lines written by orjson, attributes converted through a bounded cache, the series "
        "files of all open runs kept open in one pool (a point is one `write`)."
    )
    verdict = "**PASS**" if ok else "**FAIL**"
    print(
        f"{verdict}: {span_rate:,.0f} spans/s (target >= {TARGET_SPANS_PER_S:,}) and "
        f"{point_rate:,.0f} data points/s with {n_clients} concurrent exporters; "
        f"{lost_spans + lost_points} acknowledged items lost."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
