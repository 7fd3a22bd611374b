"""The ``provtel serve`` and ``provtel convert`` commands (added by ``provtel.exporter.cli``)."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def _port(text: str) -> int | None:
    if text.lower() in ("off", "none", "-1"):
        return None
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text}")
    return port


def _formats(text: str) -> tuple[str, ...]:
    from provtel.exporter.prov.formats import parse_formats

    return parse_formats(text)


def add_serve_parser(sub: Any) -> None:
    """Register ``provtel serve``."""
    p = sub.add_parser(
        "serve",
        help="OTLP receiver (gRPC and HTTP): one PROV document per run",
        description="Receive OTLP traces and metrics over gRPC and HTTP and write one PROV "
        "document per run (trace) under --output. Stop with Ctrl-C or SIGTERM: open runs are "
        "kept and continued by the next start.",
    )
    p.add_argument("--output", "-o", type=Path, default=Path("prov"), help="default: ./prov")
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0: all)")
    p.add_argument("--grpc-port", type=_port, default=4317, help="default 4317; off: no gRPC")
    p.add_argument("--http-port", type=_port, default=4318, help="default 4318; off: no HTTP")
    p.add_argument(
        "--token-file",
        type=Path,
        help="require 'Authorization: Bearer <token>' with the token in this file",
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve TLS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds without spans after the root spans before a run is finalised (30)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="seconds without any data before a run is finalised anyway (1800)",
    )
    p.add_argument("--max-message-mib", type=float, default=4.0, help="largest request, MiB (4)")
    p.add_argument(
        "--max-inflight-mib",
        type=float,
        default=32.0,
        help="requests in progress at once, MiB; more are told to retry (32)",
    )
    p.add_argument("--max-runs", type=int, default=256, help="open runs at most (256)")
    p.add_argument(
        "--max-series", type=int, default=10_000, help="series on /metrics (10000; 0: off)"
    )
    p.add_argument("--formats", type=_formats, default=("json",), help="e.g. json,provn,turtle")
    p.add_argument(
        "--archive",
        type=Path,
        help="also append every acknowledged request to this file as OTLP/JSON lines",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send a request's headers, per request (10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a client has to send a request's body once its headers are in (30)",
    )
    p.add_argument(
        "--decode-budget-mib",
        type=float,
        default=128.0,
        help="worst-case memory of the requests being decoded at once, MiB (128)",
    )
    p.add_argument(
        "--decode-chunk-kib",
        type=float,
        default=256.0,
        help="larger requests are decoded in chunks of about this size, KiB (256)",
    )
    p.add_argument(
        "--max-series-mib",
        type=float,
        default=16.0,
        help="label text the /metrics series hold at most, MiB; bounds the page (16)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (INFO)")
    p.set_defaults(func=cmd_serve)


def read_token(path: Path) -> str:
    """The bearer token in ``path``: one line of printable text; raises ValueError with a
    message naming the file when it is missing, a folder, unreadable, binary or empty."""
    if not path.exists():
        raise ValueError(f"token file {path}: no such file")
    if path.is_dir():
        raise ValueError(f"token file {path}: is a directory, not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"token file {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"token file {path}: not text (not UTF-8)") from None
    if not token:
        raise ValueError(f"token file {path} is empty")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError(f"token file {path}: the token must be one word of printable text")
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the receiver until SIGINT/SIGTERM."""
    from provtel.exporter.receiver.core import ReceiverConfig
    from provtel.exporter.receiver.limits import ServeLimits
    from provtel.exporter.receiver.server import ReceiverServer

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        token = read_token(args.token_file) if args.token_file is not None else None
        limits = ServeLimits(
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
            decode_budget_bytes=int(args.decode_budget_mib * MiB),
            decode_chunk_bytes=int(args.decode_chunk_kib * 1024),
            max_series_bytes=int(args.max_series_mib * MiB),
        )
        config = ReceiverConfig(
            output_dir=args.output.absolute(),
            host=args.host,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            token=token,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_message_bytes=int(args.max_message_mib * MiB),
            max_inflight_bytes=int(args.max_inflight_mib * MiB),
            max_runs=args.max_runs,
            grace_s=args.grace,
            idle_timeout_s=args.idle_timeout,
            formats=args.formats,
            archive=args.archive,
            max_series=args.max_series,
            read_timeout_s=args.body_timeout,
        )
    except ValueError as exc:
        print(f"provtel serve: {exc}", file=sys.stderr)
        return 2
    # Ingest allocates many short-lived dicts that reference counting frees; the default
    # generation-0 threshold (700) ran the cycle collector every few spans (~10% of ingest).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        server = ReceiverServer(config, limits)  # OutputInUse: another receiver has --output
        server.start()
    except OSError as exc:
        print(f"provtel serve: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # TlsError: the certificate or key cannot be used
        print(f"provtel serve: {exc}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.request_stop())
    grpc = f"{config.host}:{server.grpc_port}" if server.grpc_port else "off"
    http = f"{config.host}:{server.http_port}" if server.http_port else "off"
    print(
        f"provtel serve: listening grpc={grpc} http={http} output={config.output_dir}",
        flush=True,
    )
    server.wait()
    server.stop()
    return 0


def add_convert_parser(sub: Any) -> None:
    """Register ``provtel convert``."""
    p = sub.add_parser(
        "convert",
        help="OTLP/JSON files (Collector file exporter) -> PROV documents",
        description="Convert OTLP/JSON files, one request per line as the Collector's file "
        "exporter (or provtel serve --archive) writes them, into one PROV document per run.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="OTLP/JSON (.gz too)")
    p.add_argument("--output", "-o", type=Path, default=Path("prov"), help="default: ./prov")
    p.add_argument("--formats", type=_formats, default=("json",), help="e.g. json,provn,turtle")
    p.add_argument(
        "--max-line-mib",
        type=float,
        default=64.0,
        help="longest input line, MiB; longer lines are skipped and reported (64)",
    )
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert files; exit 1 when lines had to be skipped, 2 when a file is missing."""
    from provtel.exporter.receiver.convert import convert_files

    missing = [f for f in args.files if not f.is_file()]
    if missing:
        print(f"provtel convert: no such file: {missing[0]}", file=sys.stderr)
        return 2
    if not args.max_line_mib > 0:
        print("provtel convert: --max-line-mib must be positive", file=sys.stderr)
        return 2
    try:
        result = convert_files(args.files, args.output, args.formats, int(args.max_line_mib * MiB))
    except OSError as exc:  # the output folder is in use (a receiver), or cannot be written
        print(f"provtel convert: {exc}", file=sys.stderr)
        return 2
    for problem in result.problems:
        print(f"provtel convert: skipped {problem}", file=sys.stderr)
    for doc in result.documents:
        print(doc)
    print(
        f"provtel convert: {result.spans} spans, {result.points} metric points, "
        f"{result.rejected} rejected -> {len(result.documents)} document(s)",
        file=sys.stderr,
    )
    return 1 if result.problems else 0
