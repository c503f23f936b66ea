"""`bind_listener`: the one way the gateway binds its TCP socket, for the supervisor's
shared socket and for each worker's own SO_REUSEPORT socket alike.

An IPv6 host is bound dual-stack (IPV6_V6ONLY off) in both modes: on `::` IPv4 clients
are served too, seen as `::ffff:a.b.c.d` and counted as their IPv4 address
(`connlimit.peer_key`). Left to defaults, `socket.create_server` turned dual-stack off
while a bare socket followed the host's `net.ipv6.bindv6only`, so the same manifest
served IPv4 clients or not depending on `reuse_port`.
"""

from __future__ import annotations

import errno
import os
import socket

from ..errors import UsageError

__all__ = ["bind_listener", "BACKLOG"]

BACKLOG = 2048

_BIND_HINTS = {errno.EADDRINUSE: "; stop what uses it or choose another --port",
               errno.EADDRNOTAVAIL: "; it is not an address of this host",
               errno.EACCES: "; ports below 1024 need privileges"}


def bind_listener(host: str, port: int, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A TCP socket bound to `host`:`port` (port 0: the kernel picks), listening unless
    `listen` is False (a socket that only holds the port for `reuse_port` workers);
    with `reuse_port`, SO_REUSEPORT so every worker can bind its own. Raises UsageError,
    one line naming the address, when it cannot be bound."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            if listen:
                sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
        return sock
    except (OSError, OverflowError, UnicodeError) as exc:
        code = getattr(exc, "errno", None) or 0
        if isinstance(exc, socket.gaierror) or code < 0:
            reason = "not an address of this host; give an IP address with --host"
        elif code:
            reason = os.strerror(code).lower() + _BIND_HINTS.get(code, "")
        else:
            reason = str(exc)
        raise UsageError(f"cannot listen on {where}: {reason}") from None
