"""Fixtures: an in-process ``provtel serve`` on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.receiver import ReceiverConfig, ReceiverServer
from provtel.exporter.receiver.limits import ServeLimits
from tests.receiver.helpers import ServeProcess

_LIMITS = set(ServeLimits.__dataclass_fields__)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ReceiverServer]]:
    """Start receivers (any free ports, output under the test's folder); stopped at the end.
    Keyword arguments set :class:`ReceiverConfig` and :class:`ServeLimits` fields."""
    servers: list[ReceiverServer] = []

    def start(**overrides: Any) -> ReceiverServer:
        settings: dict[str, Any] = {
            "output_dir": tmp_path / "out",
            "grpc_port": 0,
            "http_port": 0,
            "grace_s": 0.2,
        }
        limits = {k: overrides.pop(k) for k in list(overrides) if k in _LIMITS}
        settings.update(overrides)
        server = ReceiverServer(ReceiverConfig(**settings), ServeLimits(**limits))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_s=1.0)


@pytest.fixture(autouse=True)
def _no_receiver_left_running() -> Iterator[None]:
    """Kill (and wait for) any ``provtel serve`` subprocess a test left running -- a test that
    failed before stopping its server must not leave it behind for the rest of the session."""
    yield
    ServeProcess.stop_all()
