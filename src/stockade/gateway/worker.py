"""One gateway worker process: uvicorn (uvloop + httptools) serving `GatewayApp`.

Started by the supervisor (`server.py`) as ``python -m stockade.gateway.worker``, it
serves an inherited listening socket (or its own SO_REUSEPORT one), confines itself
once it holds it (`confine.py`: the one call site), then receives the connection table
(`conntable.py`) on a socket from the supervisor, reports readiness
on a pipe once its functions are loaded and it accepts connections, drains on
SIGTERM/SIGINT (first `drain_grace` seconds of serving on with /readyz at 503, so a load
balancer stops sending before the listener closes), reloads the manifest on SIGHUP (the
text the supervisor accepted: `--snapshot`, never the file as it is now),
and exits if the supervisor dies. A signal that comes before it serves is acted on once it
does (`EarlySignals`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from ..display import PrintableFormatter
from ..hostcalls.fdroom import DESCRIPTORS
from .app import GatewayApp
from .confine import confine_server_process, log_protections
from .connlimit import PeerConnections
from .conntable import ConnectionTable
from .listener import bind_listener
from .protocol import guarded_protocol, guest_descriptors
from .service import GatewayService

__all__ = ["main", "WorkerServer", "EarlySignals", "received_table"]

logger = logging.getLogger("stockade.gateway")
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PARENT_CHECK_SECONDS = 1.0


class WorkerServer(uvicorn.Server):
    """uvicorn's server, marking the service as draining when told to exit and wiring
    SIGHUP and readiness once it accepts connections."""

    def __init__(self, config: uvicorn.Config, service: GatewayService,
                 ready_fd: int | None, early: EarlySignals | None = None) -> None:
        super().__init__(config)
        self.service = service
        self.ready_fd = ready_fd
        self.early = early or EarlySignals()
        self._parent = os.getppid()
        self._tasks: set[asyncio.Task[object]] = set()
        self._close_at: float | None = None  # end of the drain grace (monotonic)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Drain: /readyz answers 503 at once; requests, old and new, are served for
        `drain_grace` seconds more; then no new connections and in-flight requests
        finish. A second signal ends the grace."""
        grace = self.service.settings.drain_grace
        if grace > 0 and self._close_at is None and not self.should_exit:
            self.service.draining = True
            self._close_at = time.monotonic() + grace
            logger.info("draining: /readyz answers 503; serving %g s more", grace)
            return
        self.service.draining = True
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s); ends the drain grace once it is over."""
        if self._close_at is not None and time.monotonic() >= self._close_at:
            self.should_exit = True
        return await super().on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, then SIGHUP, the parent watch and the readiness report;
        then the signals that came before their handlers (`EarlySignals`)."""
        await super().startup(sockets)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        self._spawn(self._watch_parent())
        if self.ready_fd is not None and not self.should_exit:
            try:
                os.write(self.ready_fd, b"R")
            except OSError:
                pass  # a restarted worker: nobody waits for it
            os.close(self.ready_fd)
            self.ready_fd = None
        for sig in self.early.take():
            if sig != signal.SIGHUP:
                self.handle_exit(sig, None)
            elif not self.should_exit:
                self._reload()  # the snapshot may be newer than the one loaded

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reload(self) -> None:
        logger.info("SIGHUP: reloading %s", self.service.path.name)
        self._spawn(self.service.reload())

    async def _watch_parent(self) -> None:
        while not self.should_exit:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != self._parent:
                logger.warning("supervisor is gone: draining and exiting")
                self.service.draining = True
                self.should_exit = True


class EarlySignals:
    """Notes the signals a worker gets before it serves; `WorkerServer.startup` acts on
    them. The supervisor spawns workers with these signals blocked and the worker
    unblocks them only once this is their handler: a SIGHUP (a reload) sent to a
    replacement before it had a handler killed it, as a crash. uvicorn, at its exit,
    restores this handler and raises again the signal it drained for: noted, no more."""

    def __init__(self) -> None:
        self._seen: list[int] = []

    def install(self) -> None:
        """Become the handler of `_SIGNALS`, then unblock them (pending ones arrive)."""
        for sig in _SIGNALS:
            signal.signal(sig, self._note)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _note(self, sig: int, frame: FrameType | None) -> None:
        if sig not in self._seen:
            self._seen.append(sig)

    def take(self) -> list[int]:
        """The signals noted so far, in order, once each; forgotten from here."""
        seen, self._seen = self._seen, []
        return seen


def received_table(fd: int) -> int:
    """The connection table's descriptor, read from the supervisor's socket `fd` (then
    closed) once the worker is confined, so no other process could open it while the
    worker was dumpable. Never inheritable: never into a pool process. Raises
    ValueError when none came."""
    with socket.socket(fileno=fd) as channel:
        try:
            _, fds, _, _ = socket.recv_fds(channel, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except OSError as exc:
            raise ValueError(f"connection table: {exc.strerror}") from None
    if len(fds) != 1:
        for extra in fds:
            os.close(extra)
        raise ValueError("connection table: the supervisor sent none")
    return fds[0]


def main(argv: list[str] | None = None) -> int:
    """Run one worker until it is told to stop; returns the process exit code."""
    # Blocked since before the fork (the supervisor waits for them; children inherit
    # its mask): pending ones reach this handler, never the default action.
    early = EarlySignals()
    early.install()
    parser = argparse.ArgumentParser(prog="stockade.gateway.worker")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--snapshot", type=Path,
                        help="the manifest text the supervisor accepted (read instead)")
    parser.add_argument("--overrides", default="{}", help="server settings as JSON")
    parser.add_argument("--fd", type=int, help="inherited listening socket")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--metrics-dir", type=Path)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--table-socket", type=int, required=True,
                        help="socket the connection table's descriptor arrives on")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter(f"stockade serve [worker {args.index}]: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    service = GatewayService(args.manifest, json.loads(args.overrides), index=args.index,
                             workers=args.workers, metrics_dir=args.metrics_dir,
                             snapshot=args.snapshot)
    settings = service.load().server
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = bind_listener(settings.host, settings.port, reuse_port=True, join=True)
    # Bound: from here on the worker needs no privilege (before any thread starts).
    log_protections(confine_server_process())
    try:
        column = ConnectionTable(received_table(args.table_socket)).column(args.index)
    except ValueError as exc:
        logger.error("%s", exc)
        return 3
    metrics = service.metrics
    per_ip = PeerConnections(
        settings.max_connections_per_ip, column,
        lambda: metrics.inc("stockade_gateway_connections_refused_total", ()),
        settings.max_connections_ipv6_prefix,
        lambda: metrics.inc("stockade_gateway_connection_table_full_total", ()))
    # The guests' part of the descriptors: the rest is the connections' and the worker's.
    DESCRIPTORS.limit(guest_descriptors(), settings.threads)  # inline runs open none
    app = GatewayApp(service)
    config = uvicorn.Config(
        # No proxy headers: REMOTE_ADDR is the peer's address, never a client's claim.
        # httptools, with the head timeout and size limit uvicorn lacks, handing requests
        # to the app's `answer` without an ASGI scope (protocol.py).
        app, loop="uvloop", ws="none", lifespan="on", proxy_headers=False,
        http=guarded_protocol(app.answer, settings.header_timeout, settings.max_header_size,
                              per_ip, send_timeout=settings.body_timeout,
                              send_min_rate=settings.body_min_rate,
                              response_buffer=settings.response_buffer,
                              ipv6_prefix=settings.max_connections_ipv6_prefix,
                              header_buffer=settings.header_buffer,
                              header_buffer_per_client=settings.header_buffer_per_client),
        access_log=False, log_config=None, log_level="warning", server_header=False,
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout)),
        timeout_keep_alive=max(1, math.ceil(settings.keep_alive_timeout)),
    )
    server = WorkerServer(config, service, args.ready_fd, early)
    server.run(sockets=[sock])
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
