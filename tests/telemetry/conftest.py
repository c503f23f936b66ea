"""Fixtures: real OTLP receivers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .receiver import GrpcReceiver, HttpReceiver


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    """The collector's gRPC services on a loopback port."""
    receiver = GrpcReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """OTLP/HTTP on a loopback port."""
    receiver = HttpReceiver()
    yield receiver
    receiver.close()
