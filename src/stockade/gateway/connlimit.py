"""`PeerConnections`: how many connections one client address holds open on a worker.

Without a cap one client can open connections until the worker runs out of file
descriptors (or the kernel's accept queue fills), and then nobody else is served: a
connection costs the client a socket and nothing more, and the head timeout
(`protocol.py`) only ends one that is slow to send its head, not one that sends a
request now and then on a kept-alive connection. `[server] max_connections_per_ip`
bounds the connections one peer address (the socket's, never a forwarding header)
holds on each worker process; one past it is answered 503 and closed at once, when
it is accepted, before anything is read from it. Each refusal is counted (`on_refused`,
the `stockade_gateway_connections_refused_total` metric); the log says so once per
address per `LOG_INTERVAL` seconds, with the count since, so a flood cannot flood the
log.

Checked once per connection, not per request. Used on the event loop thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["PeerConnections", "REFUSAL", "LOG_INTERVAL"]

logger = logging.getLogger("stockade.gateway")
LOG_INTERVAL = 10.0  # seconds between log lines about one address
# What a refused connection is sent before it is closed.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\n"
           b"connection: close\r\n\r\n")


class PeerConnections:
    """At most `limit` open connections per peer address; `on_refused()` is called for
    each connection refused."""

    def __init__(self, limit: int, on_refused: Callable[[], None] | None = None) -> None:
        if limit < 1:
            raise ValueError(f"max_connections_per_ip: expected at least 1, not {limit}")
        self.limit = limit
        self._on_refused = on_refused
        self._open: dict[str, int] = {}  # address -> open connections; no entry at 0
        self._logged: dict[str, tuple[float, int]] = {}  # address -> (last line, since)

    def open(self, address: str) -> bool:
        """A connection from `address` was accepted: True when it may stay (it is then
        counted until `close`), False when the address holds `limit` already."""
        held = self._open.get(address, 0)
        if held < self.limit:
            self._open[address] = held + 1
            return True
        self._refused(address)
        return False

    def close(self, address: str) -> None:
        """A connection `open` let stay has ended."""
        held = self._open.get(address, 0) - 1
        if held > 0:
            self._open[address] = held
        else:
            self._open.pop(address, None)

    def held(self, address: str) -> int:
        """The connections `address` holds open now."""
        return self._open.get(address, 0)

    def _refused(self, address: str) -> None:
        if self._on_refused is not None:
            self._on_refused()
        now = time.monotonic()
        last, since = self._logged.get(address, (-LOG_INTERVAL, 0))
        if now - last < LOG_INTERVAL:
            self._logged[address] = (last, since + 1)
            return
        if len(self._logged) >= 4096:  # bounded: forget addresses not refused lately
            self._logged = {a: e for a, e in self._logged.items() if now - e[0] < LOG_INTERVAL}
            if len(self._logged) >= 4096:
                self._logged.clear()
        self._logged[address] = (now, 0)
        more = f" ({since} more refused since the last line)" if since else ""
        logger.warning("%s holds %d connections (max_connections_per_ip): a connection "
                       "was refused with 503%s", address or "a local client", self.limit,
                       more)
