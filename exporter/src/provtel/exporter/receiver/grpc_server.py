"""OTLP/gRPC: ``TraceService/Export`` and ``MetricsService/Export`` with grpcio.

The services are those of ``opentelemetry.proto.collector.{trace,metrics}.v1`` (names taken from
their descriptors), registered as raw-bytes handlers rather than through
``add_TraceServiceServicer_to_server``: grpcio answers a request it cannot deserialize with
``INTERNAL``, and OTLP wants ``INVALID_ARGUMENT`` for malformed data, so the handler decodes.

Status codes (OTLP specification, "OTLP/gRPC Response"):

========================= ==============================================================
``OK``                    accepted; ``partial_success`` says how many items were rejected
``INVALID_ARGUMENT``      the request cannot be decoded (not retryable)
``UNAUTHENTICATED``       a token is configured and the request lacks it or has another
``RESOURCE_EXHAUSTED``    larger than ``max_message_bytes`` (grpcio itself), too many RPCs
                          at once (grpcio), or the in-flight budget / open runs are full:
                          then with ``RetryInfo`` (retryable)
``UNIMPLEMENTED``         another service (logs)
``INTERNAL``              a bug; logged
========================= ==============================================================

``RetryInfo`` travels in ``grpc-status-details-bin`` (a ``google.rpc.Status``, what the
Collector reads) and in ``google.rpc.retryinfo-bin`` (what the Python exporter reads).
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import NoReturn

import grpc
from google.rpc import code_pb2, status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from provtel.exporter.prov.otlp import OtlpError
from provtel.exporter.receiver.decode import Ingest
from provtel.exporter.receiver.runs import Overloaded

logger = logging.getLogger(__name__)

TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
METRICS_SERVICE = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name


def _retry_metadata(message: str, delay_s: float) -> tuple[tuple[str, bytes], ...]:
    info = RetryInfo()
    info.retry_delay.FromNanoseconds(int(delay_s * 1e9))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


def _abort_retry(context: grpc.ServicerContext, message: str, delay_s: float) -> NoReturn:
    context.set_trailing_metadata(_retry_metadata(message, delay_s))
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
    raise AssertionError("context.abort() returned")  # it raises; this tells type checkers


def _handler(ingest: Ingest, signal: str) -> grpc.RpcMethodHandler:
    receiver = ingest.receiver
    config = receiver.config

    def handle(data: bytes, context: grpc.ServicerContext) -> bytes:
        if receiver.needs_token:
            metadata = dict(context.invocation_metadata())
            if not receiver.token_ok(str(metadata.get("authorization") or "")):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        with receiver.budget.reserve(len(data)) as admitted:
            if not admitted:
                receiver.stats.refused_requests += 1
                _abort_retry(context, "receiver busy: retry later", config.retry_after_s)
            try:
                response = ingest.export(signal, data)
            except OtlpError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Overloaded as exc:
                _abort_retry(context, str(exc), exc.retry_after_s)
            except Exception:
                logger.exception("provtel serve: cannot handle a gRPC export")
                context.abort(grpc.StatusCode.INTERNAL, "internal error; see the receiver's log")
        return bytes(response.SerializeToString())

    # No (de)serializers: the handler gets the raw bytes and returns bytes.
    return grpc.unary_unary_rpc_method_handler(handle)


def start_grpc_server(ingest: Ingest) -> tuple[grpc.Server, int]:
    """Start the OTLP/gRPC server; return it and the port it listens on."""
    config = ingest.receiver.config
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=config.grpc_workers, thread_name_prefix="provtel-grpc"
        ),
        handlers=[
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE, {"Export": _handler(ingest, "traces")}
            ),
            grpc.method_handlers_generic_handler(
                METRICS_SERVICE, {"Export": _handler(ingest, "metrics")}
            ),
        ],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.grpc_max_concurrent_rpcs,
    )
    address = f"{config.host}:{config.grpc_port or 0}"
    try:
        if config.tls_cert is not None and config.tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio's way of saying the address is taken (TLS files are
        # checked before, by provtel.exporter.receiver.tls, so this is about the address)
        raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    server.start()
    return server, port
