"""The libraries this instrumentation instruments (mirrored by the ``instruments`` extra)."""

_instruments = ("torch >= 2.1",)
