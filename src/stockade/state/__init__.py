"""Shared gateway state: tenant and function quotas, circuit breakers, denial counts.

    open_state(settings, directory, index) -> StateBackend     (base.py)
    ├── LocalState   this server only: mapped cells + SQLite   (local.py, quota.py)
    └── RedisState   every replica sharing one Redis            (redisstate.py, redisgate.py,
                     admissions granted ahead and spent here     keys.py, scripts.py, resp.py,
                     for milliseconds                            credit.py, client.py)
    SharedBreakers   the breakers in Redis, for `stockade breaker list|reset` (breakers.py)

Importing this package never imports redis-py: only `RedisState` does, when a manifest
names a `redis://` backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Gate, GateSpec, Lease, StateBackend
from .errors import BreakerOpen, QuotaExceeded, StateError, StateUnavailable
from .local import LocalState
from .quota import Quota
from .settings import StateSettings, parse_state

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BreakerOpen",
    "Gate",
    "GateSpec",
    "Lease",
    "LocalState",
    "Quota",
    "QuotaExceeded",
    "StateBackend",
    "StateError",
    "StateSettings",
    "StateUnavailable",
    "open_state",
    "parse_state",
]


def open_state(settings: StateSettings, directory: Path | None = None, index: int = 0,
               on_fallback: Callable[[str], None] | None = None) -> StateBackend:
    """The state backend `settings` name, for worker `index` of a server whose workers
    share `directory` (None: this process only). `on_fallback(reason)` is called when a
    Redis backend decides alone (`fail_open`) or refuses (`fail_closed`) because the
    store is unavailable. A Redis backend is connected, its scripts loaded, before it is
    returned (as long as a connection's steps may take, each within the timeout; a
    store that fails is marked down): the gateway serves only then. Raises PolicyError
    for an unusable URL."""
    if not settings.shared:
        return LocalState(directory, index)
    from .redisstate import RedisState

    state = RedisState(settings, LocalState(directory, index, degraded=True), on_fallback)
    state.connect()
    return state
