"""Fixtures: real OTLP receivers on loopback, an audit log of five records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.telemetry import AuditLog

from .receiver import GrpcReceiver, HttpReceiver


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    """An audit log in the test's state directory holding five violations."""
    audit = AuditLog(tmp_path / "state" / "audit.jsonl")
    for number in range(5):
        audit.append("violation", f"timeout #{number}", module="m.wasm", outcome="timeout")
    return audit


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
