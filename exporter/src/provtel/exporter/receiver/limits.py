"""Bounds of ``provtel serve``'s transports that are not in :class:`ReceiverConfig`.

The request-level bounds (message size, bytes in flight, open runs, connections) are in
:class:`~provtel.exporter.receiver.core.ReceiverConfig`; these are the connection deadlines and
the memory bounds of decoding and of ``/metrics``. Their command-line options are those of
``provtel serve`` (``--header-timeout``, ``--decode-budget-mib``, ``--max-series-mib``).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024

#: Requests larger than this (bytes on the wire) are decoded in chunks of about this size.
CHUNK_BYTES = 256 * 1024
#: Default decode budget: worst-case decoded bytes of all decodes in progress at once.
DECODE_BUDGET_BYTES = 128 * MiB


@dataclass(frozen=True)
class ServeLimits:
    """Deadlines and memory bounds of the transports (defaults are ``provtel serve``'s)."""

    #: Seconds from the start of a request (or of waiting on a keep-alive connection) until
    #: all its headers are in; then the connection is closed.
    header_timeout_s: float = 10.0
    #: Seconds from the end of the headers until all of the body is in (None: the
    #: configuration's ``read_timeout_s``).
    body_timeout_s: float | None = None
    #: Largest request line plus headers, bytes.
    max_header_bytes: int = 64 * 1024
    #: HTTP requests up to this size (decompressed) are decoded on the event loop's thread;
    #: larger ones on a worker thread, so that the loop keeps serving meanwhile.
    http_inline_bytes: int = 256 * 1024
    #: Threads that decode and journal the larger HTTP requests.
    http_workers: int = 2
    #: Worst-case decoded bytes of all decodes in progress at once (HTTP and gRPC together).
    decode_budget_bytes: int = DECODE_BUDGET_BYTES
    #: Requests larger than this are decoded in chunks of about this size.
    decode_chunk_bytes: int = CHUNK_BYTES
    #: Bytes of label text the ``/metrics`` series may hold together (bounds the page too).
    max_series_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        if self.header_timeout_s <= 0 or (self.body_timeout_s or 1) <= 0:
            raise ValueError("timeouts must be positive")
        if self.decode_chunk_bytes < 1024 or self.decode_budget_bytes < 1:
            raise ValueError("decode chunks must be at least 1 KiB, the budget positive")
