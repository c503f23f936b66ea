"""The gateway fixtures, for trust tests against a real gateway."""

from __future__ import annotations

from tests.gateway.conftest import start_gateway

__all__ = ["start_gateway"]
