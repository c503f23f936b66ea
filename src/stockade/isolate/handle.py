"""`WorkerProcess`: the parent's handle on one worker: start, talk, kill, explain a death.

A worker is a fresh interpreter (`python -P -m PROGRAM`) in its own session, its own
cgroup and, once it has hardened itself by the `WorkerPlan` it reads first, behind its
own seccomp filter. The handle owns the two pipes, the cgroup, the worker's temporary
directory, and an unlinked file collecting the worker's stderr, which explains crashes.

Two programs speak through it: `stockade.isolate.worker` (one sandbox, modules sent per
run) and the gateway's pool worker (`stockade.gateway.poolworker`: a cordon's
functions, prepared once). Both take `READ_FD WRITE_FD PARENT_PID TIE` (see
`worker.worker_main`) and answer `("ready", {"protections": [...], ...})` first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import stat
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from ..allocator import arena_limit, run_tunables
from ..engine.cache import MAX_BYTES_ENV, scope_root
from ..engine.seal import scoped_key
from ..errors import WorkerError
from ..keys import KeyFileError, aot_key_path, config_dir, read_key
from ..paths import import_path, module_command
from ..policy.units import format_size
from ..result import Outcome
from ..rmtree import remove_tree
from ..sandbox.scratch import SCRATCH_PREFIX
from ..tempdirs import LockedTempDir
from .cgroup import CgroupLimits, WorkerCgroup, create_cgroup
from .plan import WorkerPlan, inherited
from .protections import Protection
from .protocol import (
    Wait,
    error_from_wire,
    read_reply,
    write_bytes_frame,
    write_file_frame,
    write_frame,
)

__all__ = ["WorkerProcess", "WorkerStopped", "worker_environment", "INHERITED_ENV",
           "WORKER_PROGRAM"]

WORKER_PROGRAM = "stockade.isolate.worker"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_STALL_CHECK = 0.25  # seconds between looks at a silent worker's state


class WorkerStopped(Exception):
    """The worker stayed stopped (SIGSTOP, a tracer) while it was handed a request or
    an answer was awaited: it can do neither, and no guest is to blame for that."""


logger = logging.getLogger(__name__)


# Variables a worker inherits from its parent: locale and search path only. Anything
# else (tokens, keys, credentials) stays out; the guest's own variables come with each
# run, as the policy allows them (`env_allow`).
_OUT_OF_MEMORY = ("memory allocation of", "MemoryError", "Cannot allocate memory",
                  "out of memory")

INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH")
# Seconds a worker whose channel closed has to exit before it is killed (`death_cause`):
# an exiting interpreter closes it last, within milliseconds.
EXIT_GRACE = 2.0


def worker_environment(plan: WorkerPlan) -> dict[str, str]:
    """The whole environment of a new worker: an allow-list of the parent's variables,
    plus what Stockade sets (the cache, the temporary directory, the import path)."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    # Stockade must import from where this process imported it, never from the cwd (-P).
    env["PYTHONPATH"] = import_path()
    # Few malloc arenas (RLIMIT_AS counts their reservations), a cache sized for runs.
    env.update(arena_limit())
    env.update(run_tunables(inherited=False))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the package is read-only to the worker
    if plan.cache is not None:
        env["STOCKADE_CACHE_DIR"] = str(plan.cache)
        env[MAX_BYTES_ENV] = str(plan.cache_max_bytes)  # its sandbox's checked cap
    env["STOCKADE_CONFIG_DIR"] = str(config_dir())  # so key paths agree with the parent's
    if plan.temp_dir is not None:
        env["TMPDIR"] = env["HOME"] = str(plan.temp_dir)
    return env


def _scoped(plan: WorkerPlan) -> WorkerPlan:
    """The plan with its scope's AoT key (derived from this host's, which the worker
    cannot reach once hardened, and must not hold: see `seal.scoped_key`) and its scope's
    cache directory, `<cache>/scopes/<scope_name>`; without a scope, this host's key and
    cache. Without a usable host key the worker gets none: its loader says why."""
    try:
        key = read_key(aot_key_path())
    except KeyFileError as exc:
        logger.warning("the AoT key cannot be handed to the worker: %s", exc.reason)
        key = None
    if not plan.cache_scope:  # this host's own cache (see WorkerPlan.cache_scope)
        return dataclasses.replace(plan, aot_key=key)
    # The directory `AotCache.scope` opens, named without building a cache (which reads
    # and checks the audit settings: a malformed one would fail every worker's start).
    cache = plan.cache and scope_root(plan.cache, plan.cache_scope)
    return dataclasses.replace(
        plan, cache=cache, aot_key=key and scoped_key(key, plan.cache_scope))


def _temp_base() -> str:
    """Where a worker's temporary directory goes: the caller's temporary directory when
    a worker running under its own uid can reach it (every directory above it searchable
    by others), else /tmp. A TMPDIR inside a private 0700 tree would lock the worker out
    of its own directory."""
    base = Path(tempfile.gettempdir()).resolve()
    for directory in (base, *base.parents):
        try:
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return "/tmp"
        except OSError:
            return "/tmp"
    return str(base)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _remove_temp(path: Path, keep_scratch: bool) -> None:
    """Remove a worker's temporary directory; with `keep_scratch`, only when it holds
    no kept scratch directory."""
    if keep_scratch and any(path.glob(f"{SCRATCH_PREFIX}*")):
        return
    # Guest-made trees live here: removed iteratively, and a failure is logged, not hidden.
    failure = remove_tree(path)
    if failure is not None:
        logger.warning("could not remove the worker's temporary directory: %s", failure)


def _reap(proc: subprocess.Popen[bytes], cgroup: WorkerCgroup, fds: list[int],
          stderr: IO[bytes] | None, temp_dir: LockedTempDir, keep_scratch: bool) -> None:
    """Kill and wait for the worker, close the pipes and the stderr file, remove the
    cgroup and the worker's temporary directory (idempotent)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    cgroup.kill_all()
    cgroup.remove()
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
    if stderr is not None:
        stderr.close()
    _remove_temp(temp_dir.path, keep_scratch)
    temp_dir.close()


class WorkerProcess:
    """One running worker. Not thread-safe: its owner serialises requests.

    `program` is the module the interpreter runs (see the module docstring); `env` adds
    variables to the allow-listed environment (`worker_environment`); with `log`, the
    worker's stderr is this process's (its log lines join ours) instead of a private
    file, and a death is explained without its last words. Raises WorkerError when the
    interpreter cannot be started.
    """

    def __init__(self, plan: WorkerPlan, limits: CgroupLimits | None, python: str, *,
                 program: str = WORKER_PROGRAM, env: Mapping[str, str] | None = None,
                 log: bool = False) -> None:
        self.memory_limit = limits.memory if limits is not None else None
        self._memory_extra = 0  # bytes allowed over `memory_limit` now (`allow_memory`)
        self._keep_temp = plan.policy.capabilities.keep_scratch
        # Until the finalizer owns them, whatever fails (not only an OSError: a ValueError
        # from Popen, Ctrl-C) takes back what was made so far, last made first.
        with contextlib.ExitStack() as undo, contextlib.ExitStack() as child_ends:
            try:
                # The worker's own temporary directory (scratch directories go there): the
                # only place besides the grants and the cache that it may write. Locked
                # while this process lives: one killed outright leaves it to the next.
                self._temp = LockedTempDir("stockade-worker-", _temp_base(),
                                           kept=SCRATCH_PREFIX)
                undo.callback(self._temp.close)
                self.temp_dir = self._temp.path
                undo.callback(_remove_temp, self.temp_dir, False)
                plan = _scoped(dataclasses.replace(plan, temp_dir=self.temp_dir))
                plan, held = inherited(plan)  # directories granted from descriptors we hold
                if plan.cache is not None:
                    with contextlib.suppress(OSError):
                        plan.cache.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.cgroup = create_cgroup(limits) if limits is not None else WorkerCgroup(
                    0, {}, [Protection("cgroup", False, "turned off by configuration")])
                undo.callback(self.cgroup.remove)
                # The worker's ends are closed here once it has its copies, or as soon as
                # anything fails (EMFILE at the next pipe left them open).
                to_worker_r, self._to_worker = os.pipe()
                child_ends.callback(os.close, to_worker_r)
                undo.callback(os.close, self._to_worker)
                self._from_worker, from_worker_w = os.pipe()
                child_ends.callback(os.close, from_worker_w)
                undo.callback(os.close, self._from_worker)
                self._stderr = None if log else tempfile.TemporaryFile()
                if self._stderr is not None:
                    undo.callback(self._stderr.close)
            except OSError as exc:  # descriptors, the temporary directory, the cgroup
                raise WorkerError(f"cannot start a worker: {exc.strerror or exc}") from None
            try:
                self.proc = subprocess.Popen(
                    module_command(program, str(to_worker_r), str(from_worker_w),
                                   str(os.getpid()), str(int(_on_main_thread())),
                                   python=python),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                    pass_fds=(to_worker_r, from_worker_w, *held), start_new_session=True,
                    env={**worker_environment(plan), **(env or {})},
                )
            except OSError as exc:
                raise WorkerError(
                    f"cannot start a worker with {python}: {exc.strerror}") from None
            child_ends.close()
            self.pid = self.proc.pid
            self._fds = [self._to_worker, self._from_worker]
            self._finalizer = weakref.finalize(self, _reap, self.proc, self.cgroup, self._fds,
                                              self._stderr, self._temp, self._keep_temp)
            undo.pop_all()
        self.sent: set[tuple[int, ...]] = set()  # modules the worker holds (see process)
        self.vouched: set[str] = set(plan.vouched)  # `.cwasm` digests it accepts (process)
        self._join_failures = self.cgroup.add(self.pid)
        self._oom_before = self.cgroup.oom_kills()
        # Set by `death_cause`: how a run the worker died in ended. Out of memory
        # (its cgroup's OOM killer, its address space) is `memory_limit`; its CPU-time
        # limit (SIGXCPU) is `timeout`, as the deadline it backs up; any other death is
        # the host's `error`. The first two are the guest's doing, and breakers count them.
        self.ended_as = Outcome.ERROR
        self.protections: list[Protection] | None = None
        self.ready: dict[str, Any] = {}  # the worker's `ready` payload
        self.runs = 0
        try:
            write_frame(self._to_worker, plan)
        except BaseException:  # it died at once, or Ctrl-C: reaped now, not when collected
            self.close()
            raise
        # From here every write can wait for room watching the worker (`_await`): a
        # blocking write to a worker that stopped reading would hold the caller for ever.
        os.set_blocking(self._to_worker, False)

    def wait_ready(self, timeout: float, stall: float | None = None) -> list[Protection]:
        """Wait for the worker's `ready` and return every protection, cgroup's included.

        Raises WorkerError (with the cause) when it dies, stays silent, or stays
        stopped `stall` seconds (see `receive`), and the error it reports when it
        refuses what it was to serve.
        """
        if self.protections is not None:
            return self.protections
        try:
            kind, payload = self.receive(time.monotonic() + timeout, 1 << 20, stall)
        except TimeoutError:
            self.kill()
            raise WorkerError(f"the worker did not start within {timeout:g} s") from None
        except WorkerStopped as exc:
            self.kill()
            raise WorkerError(f"the worker did not start: {exc}") from None
        except EOFError:
            raise WorkerError(f"the worker failed to start: {self.death_cause()}") from None
        if kind == "error":  # it refused what it was to serve (a module it cannot load)
            self.kill()
            raise error_from_wire(payload)
        if kind != "ready" or not isinstance(payload, dict):
            self.kill()
            raise WorkerError(f"the worker answered {kind!r} instead of 'ready'")
        try:
            worker = [Protection(str(name)[:200], bool(active), str(detail)[:2000])
                      for name, active, detail in payload["protections"]]
        except (KeyError, TypeError, ValueError, RecursionError):
            self.kill()
            raise WorkerError("the worker sent a malformed 'ready'") from None
        self.ready = payload
        failed = {item.name for item in self._join_failures}
        cgroup = [p for p in self.cgroup.report if p.name not in failed] + self._join_failures
        self.protections = cgroup + worker
        return self.protections

    def send(self, message: Any, deadline: float | None = None,
             stall: float | None = None) -> None:
        """Send one request. Raises EOFError when the worker is gone, TimeoutError when
        it has not taken the whole request by `deadline` (`time.monotonic()`), and, with
        `stall` (seconds), WorkerStopped once it has stayed stopped that long without
        taking more of it. On TimeoutError or WorkerStopped part of the request may be
        in the pipe: the worker must not be handed another."""
        self._write(lambda wait: write_frame(self._to_worker, message, wait), deadline, stall)

    def send_file(self, fd: int, size: int, deadline: float | None = None,
                  stall: float | None = None) -> None:
        """Send `size` bytes of the open file `fd` as one raw frame. Raises as `send`,
        and SourceUnreadable when the file cannot be read to `size` bytes (a read error,
        or it shrank): part of the frame is then in the pipe, as at a TimeoutError."""
        self._write(lambda wait: write_file_frame(self._to_worker, fd, size, wait),
                    deadline, stall)

    def send_bytes(self, data: bytes, deadline: float | None = None,
                   stall: float | None = None) -> None:
        """Send `data` as one raw frame, without copying it. Raises as `send`."""
        self._write(lambda wait: write_bytes_frame(self._to_worker, data, wait),
                    deadline, stall)

    def _write(self, write: Callable[[Wait], None], deadline: float | None,
               stall: float | None) -> None:
        def wait() -> None:
            self._await(self._to_worker, select.POLLOUT, deadline, stall,
                        "took no more of its request")

        try:
            write(wait)
        except BrokenPipeError:  # no reader left
            raise EOFError("the worker is gone") from None
        # Anything else (TimeoutError, WorkerStopped, SourceUnreadable) is raised as it
        # is: the worker, alive, waits for the rest of its frame.

    def allow_memory(self, extra: int) -> bool:
        """Let the worker's cgroup hold `extra` bytes over its memory limit (0: back to
        the limit): what a run hands it on top of the guest's memory and its own (a
        large standard input) must not read as the guest's violation. False when the
        limit could not be set (the kernel refused: the worker holds more than that):
        the limit in force is then still the earlier one."""
        if self.memory_limit is None or extra == self._memory_extra:
            return True
        if not self.cgroup.set_memory(self.memory_limit + extra):
            return False
        self._memory_extra = extra
        return True

    def receive(self, deadline: float | None, limit: int,
                stall: float | None = None) -> tuple[str, Any]:
        """The next reply as (kind, payload). Raises TimeoutError at `deadline`
        (`time.monotonic()`), EOFError when the worker died, WorkerError when malformed,
        and, with `stall` (seconds), WorkerStopped once the worker has stayed stopped
        that long without a word."""
        if stall is not None:
            self._await(self._from_worker, select.POLLIN, deadline, stall, "gave no answer")
        return read_reply(self._from_worker, deadline, limit)

    def _await(self, fd: int, events: int, deadline: float | None, stall: float | None,
               stalled: str) -> None:
        """Return once the pipe `fd` is ready for `events` (or its other end is closed).
        Raises TimeoutError at `deadline` and, with `stall`, WorkerStopped once the
        worker has been stopped `stall` seconds (`stalled` says what it did not do): the
        worker's state is looked at between, as a stopped worker would otherwise hold
        the caller to the deadline (for ever without one) and be taken for a guest that
        overran it."""
        poller = select.poll()
        poller.register(fd, events | select.POLLHUP | select.POLLERR)
        since: float | None = None
        while True:
            wait = None if stall is None else _STALL_CHECK
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                wait = left if wait is None else min(wait, left)
            if poller.poll(None if wait is None else wait * 1000):
                return
            if stall is None or not self.stopped():
                since = None
                continue
            now = time.monotonic()
            since = now if since is None else since
            if now - since >= stall:
                raise WorkerStopped(f"the worker was stopped (SIGSTOP or a tracer) and "
                                    f"{stalled} for {now - since:.1f} s")

    def stopped(self) -> bool:
        """Whether the worker is stopped (SIGSTOP, SIGTSTP, a tracer): it answers nothing
        until continued."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state in (b"T", b"t")

    def resident(self) -> int:
        """Resident memory of the worker in bytes (0 once it is gone)."""
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def oom_killed(self) -> bool:
        """True when the kernel's OOM killer acted in the worker's cgroup."""
        return self.cgroup.oom_kills() > self._oom_before

    def kill(self) -> None:
        """SIGKILL the worker and everything in its cgroup, then wait for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.cgroup.kill_all()
        self.proc.wait()

    def death_cause(self) -> str:
        """Why the worker ended, in words: OOM kill, signal, CPU limit, exit code, and
        the last line it wrote to stderr. Waits for the worker to exit, `EXIT_GRACE`
        seconds at most after its channel closed: one that closed it and lives on is
        killed (it hung its caller for ever, and a pool's slot with it: found by
        review). Sets `ended_as`."""
        try:
            code = self.proc.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()
            return (f"the worker closed its channel but did not exit within "
                    f"{EXIT_GRACE:g} s: killed")
        if self.oom_killed():
            self.ended_as = Outcome.MEMORY_LIMIT
            limit = format_size(self.memory_limit + self._memory_extra) \
                if self.memory_limit else "?"
            return (f"the worker was killed by the kernel OOM killer (SIGKILL): its cgroup "
                    f"memory limit of {limit} was reached")
        if code < 0:
            name = signal.Signals(-code).name
            if -code == signal.SIGXCPU:
                self.ended_as = Outcome.TIMEOUT
                return f"the worker exceeded its CPU time limit (RLIMIT_CPU, {name})"
            if -code == signal.SIGKILL:
                return f"the worker was killed ({name})"
            cause = f"the worker crashed ({name})"
        else:
            cause = f"the worker exited unexpectedly with code {code}"
        tail = self._stderr_tail()
        # RLIMIT_AS: an allocation failed (Rust aborts, Python raises MemoryError).
        if any(sign in tail for sign in _OUT_OF_MEMORY):
            self.ended_as = Outcome.MEMORY_LIMIT
        return f"{cause}: {tail}" if tail else cause

    def _stderr_tail(self) -> str:
        if self._stderr is None:  # in the log, not here
            return ""
        with contextlib.suppress(OSError, ValueError):  # ValueError: already closed
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2048))
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1].strip()[:300] if lines else ""
        return ""

    @property
    def alive(self) -> bool:
        """True while the worker process runs."""
        return self.proc.poll() is None

    def close(self) -> None:
        """Kill the worker, close the pipes, remove the cgroup. Safe to call twice.

        A worker holds nothing worth a graceful exit (the AoT cache is written before a
        run answers), and SIGKILL spares the interpreter's ~20 ms shutdown.
        """
        self._finalizer()
