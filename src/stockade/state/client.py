"""The Redis connection of the shared state, made one way for the gateway and the CLI.

Settings from the manifest's `[state]` (URL, timeout), credentials from the environment
(`settings.py`). No retries inside the client: one timeout is all a caller may wait.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .settings import StateSettings, redis_password

__all__ = ["connect", "RoundTripFailed"]


class RoundTripFailed(Exception):
    """Redis did not answer usefully (unreachable, timed out, a script failed); the
    message says why. Callers decide what that means (`on_unavailable`)."""


def connect(settings: StateSettings, env: Mapping[str, str] | None = None,
            name: str = "stockade") -> redis.Redis:
    """A client of the Redis `settings.backend` names (not connected yet: the first
    command connects), answering text; `name` is its CLIENT name (with the PID)."""
    env = os.environ if env is None else env
    options: dict[str, Any] = {}
    if settings.backend.startswith("rediss://") and env.get("STOCKADE_REDIS_CA_FILE"):
        options["ssl_ca_certs"] = env["STOCKADE_REDIS_CA_FILE"]
    return redis.Redis.from_url(
        settings.backend, password=redis_password(env),
        username=env.get("STOCKADE_REDIS_USERNAME") or None,
        socket_timeout=settings.timeout, socket_connect_timeout=settings.timeout,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
        decode_responses=True, client_name=f"{name}-{os.getpid()}", **options)
