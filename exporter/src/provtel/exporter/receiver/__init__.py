"""``provtel serve``: an OTLP receiver that writes one PROV document per training run.

Point a training job's OTLP exporters (or a Collector's ``otlp``/``otlphttp`` exporter) at it::

    provtel serve --output prov                  # gRPC on 127.0.0.1:4317, HTTP on :4318
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 opentelemetry-instrument python train.py

What it does, per the OTLP specification (see the transport modules for the status codes):

* receives traces and metrics over OTLP/gRPC (:mod:`.grpc_server`) and OTLP/HTTP with binary
  protobuf or JSON bodies, gzip or not (:mod:`.http_server`);
* groups them into runs -- one per trace id, so the ranks and nodes of a job merge into one
  document -- and finalises a run when its root span has ended and a grace period passed, or
  after an idle timeout (:mod:`.runs`);
* journals every record before acknowledging it (spans as the checked OTLP protobuf they came
  as, converted when the run is finalised), and reopens unfinished runs at start, so a restart
  loses nothing acknowledged;
* bounds what it holds: message size, bytes in flight, open runs, connections, pending
  resources, ``/metrics`` series; beyond a bound it answers "retry later"
  (HTTP 503 + ``Retry-After``, gRPC ``RESOURCE_EXHAUSTED`` + ``RetryInfo``);
* optionally requires a bearer token (``--token-file``) and serves TLS (``--tls-cert``,
  ``--tls-key``);
* exposes the latest metric points at ``GET /metrics`` on the HTTP port in the Prometheus text
  format, named as the Collector's Prometheus exporter names them (:mod:`.prometheus`);
* optionally archives every acknowledged request as OTLP/JSON lines (``--archive``), which
  ``provtel convert`` (:mod:`.convert`) turns into the same documents.

The record format and the PROV mapping are those of the in-process exporter
(:mod:`provtel.exporter.prov.otlp` converts OTLP to the same records).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provtel.exporter.receiver.convert import ConvertResult, convert_files
    from provtel.exporter.receiver.core import Receiver, ReceiverConfig
    from provtel.exporter.receiver.runs import Overloaded, Router
    from provtel.exporter.receiver.server import ReceiverServer

# Imported on first use (PEP 562): ``provtel --help`` and the commands that do not serve need
# none of grpc, asyncio or the HTTP server (half a second of imports).
_WHERE = {
    "ConvertResult": "convert",
    "convert_files": "convert",
    "Receiver": "core",
    "ReceiverConfig": "core",
    "Overloaded": "runs",
    "Router": "runs",
    "ReceiverServer": "server",
}

__all__ = [
    "ConvertResult",
    "Overloaded",
    "Receiver",
    "ReceiverConfig",
    "ReceiverServer",
    "Router",
    "convert_files",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
