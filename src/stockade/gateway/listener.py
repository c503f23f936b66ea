"""`bind_listener`: the one way the gateway binds its TCP socket, for the supervisor's
shared socket and for each worker's own SO_REUSEPORT socket alike.

An IPv6 host is bound dual-stack (IPV6_V6ONLY off) in both modes: on `::` IPv4 clients
are served too, seen as `::ffff:a.b.c.d` and counted as their IPv4 address
(`connlimit.peer_key`). Left to defaults, `socket.create_server` turned dual-stack off
while a bare socket followed the host's `net.ipv6.bindv6only`, so the same manifest
served IPv4 clients or not depending on `reuse_port`.

`reuse_port` spreads one server's connections over its own workers. The kernel puts every
SO_REUSEPORT socket of one user on a port in one group, so a second `stockade serve
--reuse-port` there started and took part of the first one's connections. The server's
first socket (`bind_listener` without `join`) is therefore refused wherever a socket
already listens, as a shared socket is, and holds the port so that another server's is
refused too before this one's workers listen (unless connections of a server on a shared
socket are still in TIME_WAIT there); only its own workers (`join`) bind beside it.
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


def bind_listener(host: str, port: int, reuse_port: bool, listen: bool = True,
                  join: bool = False) -> socket.socket:
    """A TCP socket bound to `host`:`port` (port 0: the kernel picks), listening unless
    `listen` is False (a socket that only holds the port for `reuse_port` workers);
    with `reuse_port`, SO_REUSEPORT so every worker can bind its own. Unless `join` (a
    worker binding the port its server holds), a port where a socket already listens is
    refused in both modes: the kernel lets every SO_REUSEPORT socket of one user share a
    port, and a second server there took part of the first one's connections. Raises
    UsageError, one line naming the address, when it cannot be bound."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if reuse_port and not join:
            return _first(family, host, port, listen)
        return _bound(family, host, port, True, reuse_port, listen)
    except (OSError, OverflowError, UnicodeError) as exc:
        code = getattr(exc, "errno", None) or 0
        if isinstance(exc, socket.gaierror) or code < 0:
            reason = "not an address of this host; give an IP address with --host"
        elif code:
            reason = os.strerror(code).lower() + _BIND_HINTS.get(code, "")
        else:
            reason = str(exc)
        raise UsageError(f"cannot listen on {where}: {reason}") from None


def _first(family: int, host: str, port: int, listen: bool) -> socket.socket:
    """The first SO_REUSEPORT socket of a server on `host`:`port`. Raises OSError
    (EADDRINUSE where another socket listens, or another server holds the port)."""
    # Bound without SO_REUSEPORT, as a shared socket would be: refused where anything
    # listens; TIME_WAIT left by a previous server is not in the way (SO_REUSEADDR).
    with _bound(family, host, port, True, False, False) as probe:
        port = probe.getsockname()[1]
    try:
        # Without SO_REUSEADDR, this socket alone refuses another server's probe from
        # now on, before this server's workers listen.
        return _bound(family, host, port, False, True, listen)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    # Only sockets that do not listen are in the way (the probe said so): TIME_WAIT
    # left by a server on a shared socket.
    return _bound(family, host, port, True, True, listen)


def _bound(family: int, host: str, port: int, reuse_address: bool, reuse_port: bool,
           listen: bool) -> socket.socket:
    """`bind_listener`'s socket; raises what `socket` raises."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if reuse_address:
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
