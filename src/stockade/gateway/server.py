"""`Supervisor`: the `stockade serve` process. It validates the manifest, compiles the
modules into the AoT cache once, opens the listening socket and runs N worker
processes (`worker.py`) that share it.

Signals: SIGTERM or SIGINT drain (workers finish in-flight requests, then exit);
SIGHUP reloads (the manifest is checked here first; a bad one is reported and the old
one kept; a good one is loaded by every worker without dropping requests); with
`watch` (`--reload`), so does a change to the manifest or a module. A worker that dies
unexpectedly is restarted. Workers, started, restarted or reloaded, load the manifest
text checked here last (`Supervisor.snapshot`), never the file as it is by then.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..allocator import run_tunables
from ..errors import ModuleError, ModuleNotFound, PolicyError, StockadeError, WorkerError
from ..paths import import_path, module_command
from ..policy.tomlfile import MAX_TOML, shared_vet
from ..regularfile import read_regular
from ..replica import REPLICA_ENV, replica_id
from ..rmtree import remove_tree
from ..tempdirs import LockedTempDir
from .confine import log_protections, not_dumpable
from .conntable import ConnectionTable, cells_for
from .listener import bind_listener
from .manifest import Manifest, load_manifest, restart_changes
from .reload import FileWatcher, watched_files
from .settings import ServerSettings

__all__ = ["Supervisor", "serve"]

logger = logging.getLogger("stockade.gateway")
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
READY_TIMEOUT = 120.0  # seconds a worker may take to load its functions
_RESTART_BACKOFF = 1.0
MAX_RESTARTS = 5


class Supervisor:
    """Serves the manifest at `path` with `overrides` (command-line server settings)."""

    def __init__(self, path: Path, overrides: dict[str, Any] | None = None,
                 watch: bool = False) -> None:
        self.path = path
        self.manifest: Manifest | None = None
        self._watcher: FileWatcher | None = None
        self._watch = watch
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        ServerSettings().override(**self.overrides)  # a bad flag: refused before any work
        # The command line's own: `overrides` gets the bound port, which would hide a
        # changed [server] port from `reload`.
        self._given = dict(self.overrides)
        self._started: Manifest | None = None  # as started, with `_given` applied
        self.settings = ServerSettings()
        self.port = 0
        self._socket: socket.socket | None = None
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._table: ConnectionTable | None = None
        # Locked while this process lives: one killed outright leaves it to the next.
        self._metrics = LockedTempDir("stockade-gateway-")
        self._metrics_dir = self._metrics.path
        # The accepted manifest's bytes, which workers read instead of the file.
        self.snapshot = self._metrics_dir / "manifest.toml"
        self._stopping = False
        self._restarts: list[float] = []
        self.failed = False
        # A reload's check runs off the signal loop (a registry may take its timeout to
        # answer, SIGTERM must not wait): the thread and its result, and whether another
        # reload was asked for meanwhile (run after it).
        self._checking: tuple[threading.Thread, list[Manifest | None]] | None = None
        self._again = False

    def prepare(self, refresh_images: bool = False) -> Manifest:
        """Load the manifest and compile every module into the AoT cache (so workers
        map it in rather than each compiling); `refresh_images` resolves `oci://` tags
        again and rewrites the lock the workers then read. Raises StockadeError naming
        the problem. The text checked becomes `snapshot` (accepted) once all passed."""
        staged = self._stage()
        manifest = load_manifest(self.path, refresh_images, staged)
        from ..sandbox.provenance import gate
        from .executor import load_standard, named_error
        from .registry import check_descriptors, manifest_quotas

        # As a fresh worker will (two descriptors a file-backed quota cell).
        settings = manifest.server.override(**self.overrides)
        check_descriptors(manifest, 2 * len(manifest_quotas(manifest)), settings.pool_workers)

        for spec in manifest.functions:
            try:
                checked = gate(spec.module, spec.policy)
                if checked is not None and checked.data is None:
                    continue  # refused by [trust]: never compiled, answered with 403
                load_standard(spec, checked.data if checked is not None else None)
            except (ModuleNotFound, ModuleError) as exc:
                raise named_error(exc, spec.name) from None
        os.replace(staged, self.snapshot)  # whole: a worker reads the old or the new
        return manifest

    def _stage(self) -> Path:
        """The manifest's bytes as they are now, copied for checking: the file may change
        again before a worker loads it (a replacement long after)."""
        try:
            data = read_regular(self.path, MAX_TOML + 1, follow=True,
                                vet=shared_vet(self.path, "manifest"))
        except (OSError, ValueError):
            load_manifest(self.path)  # raises, naming the problem
            raise PolicyError(f"{self.path}: cannot read manifest") from None
        staged = self._metrics_dir / "manifest.toml.new"
        staged.write_bytes(data)  # a directory only this server's user enters
        return staged

    def start(self) -> None:
        """Prepare, listen, start the workers and wait until all are ready."""
        # A reload asked for while the modules compile waits for the signal loop: its
        # default action ended the server.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        self.manifest = manifest = self.prepare()
        if self._watch:
            self._watcher = FileWatcher(watched_files(self.path, manifest))
        self.settings = manifest.server.override(**self.overrides)
        self._started = replace(manifest, server=manifest.server.override(**self._given))
        # With reuse_port this socket only holds the port; each worker listens on its own.
        self._socket = bind_listener(self.settings.host, self.settings.port,
                                     self.settings.reuse_port, listen=not self.settings.reuse_port)
        self.port = self._socket.getsockname()[1]
        self.overrides["port"] = self.port
        self.settings = self.settings.override(port=self.port)
        # Before any worker: one count of connections per address for the server, in a
        # process no other of its user may open it through (/proc/<pid>/fd).
        log_protections([not_dumpable()])
        self._table = ConnectionTable.create(
            self.settings.workers, cells_for(self.settings.max_connection_addresses))
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        pending = {index: self._spawn(index) for index in range(self.settings.workers)}
        deadline = time.monotonic() + READY_TIMEOUT
        for index, ready in pending.items():
            if not _wait_ready(ready, deadline):
                self.stop()
                raise WorkerError(f"worker {index} did not start (see the messages above)")

    def _spawn(self, index: int) -> int:
        read, write = os.pipe()
        # Every worker of this server reports one replica (`service.instance.id`).
        # Functions run in the worker (unless isolated): the allocator sized for runs.
        env = {**os.environ, REPLICA_ENV: replica_id(), "PYTHONPATH": import_path(),
               **run_tunables()}
        # Never importing from the working directory (-P): whoever can write there
        # would run code in every worker.
        command = [*module_command("stockade.gateway.worker"),
                   "--manifest", str(self.path), "--snapshot", str(self.snapshot),
                   "--overrides", json.dumps(self.overrides),
                   "--index", str(index), "--workers", str(self.settings.workers),
                   "--metrics-dir", str(self._metrics_dir), "--ready-fd", str(write),
                   "--log-level", logging.getLevelName(logger.getEffectiveLevel())]
        fds = [write]
        channel = None
        if self._table is not None:
            # Sent on a socket, never inherited: from its exec until it confines itself
            # the worker is dumpable again, and any process of its user could open a
            # memfd it held then through /proc/<pid>/fd (never a socket).
            ours, channel = socket.socketpair()
            with ours:
                socket.send_fds(ours, [b"T"], [self._table.fd])
            command += ["--table-socket", str(channel.fileno())]
            fds.append(channel.fileno())
        if self._socket is not None and not self.settings.reuse_port:
            command += ["--fd", str(self._socket.fileno())]
            fds.append(self._socket.fileno())
        try:
            self._workers[index] = subprocess.Popen(command, pass_fds=fds, env=env)
        finally:
            os.close(write)
            if channel is not None:
                channel.close()
        return read

    def run(self) -> int:
        """Wait for signals until stopped; returns the exit code (0 after a drain, 1 when
        workers kept dying)."""
        wait = 1.0 if self._watcher is None else self._watcher.interval
        while not self._stopping:
            info = signal.sigtimedwait(_SIGNALS, wait if self._checking is None else 0.05)
            if info is None or info.si_signo == signal.SIGCHLD:
                self._reap()
                self._finish_reload()
                self._check_files()
            elif info.si_signo == signal.SIGHUP:
                self._begin_reload()
            else:
                logger.info("draining %d workers", len(self._workers))
                self.stop()
        return 1 if self.failed else 0

    def _check_files(self) -> None:
        """With --reload: reload once the manifest or a module changed and settled."""
        if self._watcher is None or self._stopping:
            return
        changed = self._watcher.changed()
        if changed:
            logger.info("%s changed: reloading", ", ".join(path.name for path in changed))
            self._begin_reload()

    def _begin_reload(self) -> None:
        """Start checking the manifest in a thread (`_finish_reload` applies it)."""
        if self._checking is not None:
            self._again = True
            return
        result: list[Manifest | None] = []

        def check() -> None:
            try:
                result.append(self._check())
            except Exception as exc:  # noqa: BLE001 - the previous manifest serves on
                if self._stopping:
                    return  # stopped meanwhile: its directory is gone
                logger.error("reload failed, still serving the previous manifest: %s: %s",
                             type(exc).__name__, exc)
                logger.debug("the reload check failed", exc_info=True)

        thread = threading.Thread(target=check, name="stockade-reload", daemon=True)
        self._checking = (thread, result)
        thread.start()

    def _finish_reload(self) -> None:
        """Apply a finished check; start the one asked for meanwhile."""
        if self._checking is None or self._checking[0].is_alive() or self._stopping:
            return
        result = self._checking[1]
        self._checking = None
        if result and result[0] is not None:
            self._apply(result[0])
        if self._again:
            self._again = False
            self._begin_reload()

    def reload(self) -> bool:
        """Check the manifest, then have every worker load it. Returns success."""
        manifest = self._check()
        return manifest is not None and self._apply(manifest)

    def _check(self) -> Manifest | None:
        """The manifest, prepared and accepted; None (logged) when refused."""
        try:
            return self.prepare(refresh_images=True)
        except StockadeError as exc:
            logger.error("reload refused, still serving the previous manifest: %s",
                         exc.message)
            return None

    def _apply(self, manifest: Manifest) -> bool:
        """Have every worker load the accepted `manifest` (its text: `snapshot`)."""
        self.manifest = manifest
        if self._watcher is not None:
            self._watcher.watch(watched_files(self.path, manifest))
        if self._started is not None:
            waiting = restart_changes(self._started, replace(
                manifest, server=manifest.server.override(**self._given)))
            if waiting:
                logger.warning("reloaded; these changes take effect at the next restart: "
                               "%s", ", ".join(waiting))
        for process in self._workers.values():
            process.send_signal(signal.SIGHUP)
        return True

    def _reap(self) -> None:
        for index, process in list(self._workers.items()):
            code = process.poll()
            if code is None or self._stopping:
                continue
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < 60.0] + [now]
            if len(self._restarts) > MAX_RESTARTS:
                logger.error("workers keep exiting (%d restarts in a minute): stopping",
                             MAX_RESTARTS)
                self.failed = True
                self.stop()
                return
            if self._table is not None:
                self._table.clear(index)  # its connections died with it
            logger.error("worker %d exited with %s; restarting it", index, code)
            time.sleep(_RESTART_BACKOFF)
            os.close(self._spawn(index))

    def stop(self) -> None:
        """Drain every worker (SIGTERM), wait for them, close the socket. Safe twice."""
        if self._stopping and not self._workers:
            return
        self._stopping = True
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = (time.monotonic() + self.settings.drain_grace
                    + self.settings.drain_timeout + 5.0)
        for process in self._workers.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._workers.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._table is not None:
            self._table.close()
            self._table = None
        failure = remove_tree(self._metrics_dir)
        if failure is not None:
            logger.warning("could not remove the metrics directory: %s", failure)
        self._metrics.close()


def _wait_ready(fd: int, deadline: float) -> bool:
    import select

    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                return os.read(fd, 1) == b"R"
    finally:
        os.close(fd)


def serve(path: Path, overrides: dict[str, Any] | None = None,
          announce: Any = None, watch: bool = False) -> int:
    """Run the gateway until SIGTERM/SIGINT; `announce(url, settings, manifest)` is called
    once every worker is ready; `watch` reloads when the manifest or a module changes
    (`reload.py`). Raises StockadeError for a bad manifest or module."""
    supervisor = Supervisor(path, overrides, watch)
    try:
        supervisor.start()
    except BaseException:
        supervisor.stop()
        raise
    if announce is not None:
        host = supervisor.settings.host
        announce(f"http://{'[' + host + ']' if ':' in host else host}:{supervisor.port}",
                 supervisor.settings, supervisor.manifest)
    try:
        return supervisor.run()
    finally:
        supervisor.stop()

