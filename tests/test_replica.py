"""The replica id: named by the environment, else host and process."""

from __future__ import annotations

import os
import socket

import pytest

from stockade.replica import replica_id
from stockade.telemetry.settings import resolve_settings
from stockade.telemetry.sink import resource_attributes


def test_replica_id_from_the_environment_or_host_and_pid() -> None:
    assert replica_id({"STOCKADE_REPLICA_ID": "gateway-7f9c"}) == "gateway-7f9c"
    assert replica_id({}) == f"{socket.gethostname()}-{os.getpid()}"


def test_resources_carry_service_instance_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_REPLICA_ID", "pod-a")
    attrs = resource_attributes(resolve_settings("off"))
    assert attrs["service.instance.id"] == "pod-a"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=chosen")
    assert resource_attributes(resolve_settings("off"))["service.instance.id"] == "chosen"
