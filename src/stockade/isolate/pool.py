"""`SandboxPool`: N warm sandboxes behind an asyncio interface, with back-pressure.

    async with SandboxPool(policy, size=4) as pool:
        results = await asyncio.gather(*(pool.run_python(code) for code in snippets))

Each sandbox serves one run at a time on its own thread (wasmtime releases the GIL, so
the N runs proceed in parallel). Sandboxes are in-process or hardened workers as
`make_sandbox(policy, isolate)` decides (the strict profile: workers); compiled modules
are shared through the engine and the AoT cache, and a worker is kept between runs (an
isolated sandbox whose worker ends itself at a timeout also keeps a spare, see
`process`). A caller waits for a free sandbox; past `max_waiting` waiting callers, `run`
raises PoolBusy at once instead of queueing without bound. A run that breaks a limit
ends in its `Result` and the sandbox goes back to the pool for the next caller.

A pool serves callers on any event loop, one after another (`asyncio.run` twice) or at
once on several threads: a sandbox goes back from the run's own thread as the run ends,
whatever became of the loop that awaited it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import PoolBusy, UsageError
from ..sandbox.aio import ExecutorShutDown, run_in_thread
from ..sandbox.arguments import policy_argument
from .factory import make_sandbox

if TYPE_CHECKING:
    from ..invocation import Invocation
    from ..observe import RunObserver
    from ..policy import Policy
    from ..result import Result
    from .base import SandboxLike

__all__ = ["SandboxPool"]

# Every sandbox is built up front, each a thread (and with `process`, a worker): a size
# past this is a mistake that would exhaust the host before the first run.
MAX_SIZE = 1024

T = TypeVar("T")


class _Idle(Generic[T]):
    """The free sandboxes, for callers on any event loop: `put` from any thread, `take`
    awaited on the caller's loop. A woken waiter takes its sandbox itself, so a wake-up
    lost with its loop loses no sandbox; each free one not promised to a woken waiter
    wakes the oldest waiter."""

    def __init__(self, items: Iterable[T]) -> None:
        self._lock = threading.Lock()
        self._free: deque[T] = deque(items)
        self._waiters: deque[asyncio.Future[None]] = deque()  # oldest first, not woken
        self._woken: set[asyncio.Future[None]] = set()  # each promised a free one

    @property
    def waiting(self) -> int:
        """Callers waiting for a sandbox."""
        return len(self._waiters) + len(self._woken)

    def available(self) -> bool:
        """Whether a caller would get a sandbox without waiting."""
        with self._lock:
            self._forget_gone()
            return len(self._free) > len(self._woken)

    def put(self, item: T) -> None:
        """Give `item` back (any thread)."""
        with self._lock:
            self._free.append(item)
            self._wake()

    async def take(self) -> T:
        """A free item, waiting (first come, first served) for one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._forget_gone()
            if not self._waiters and len(self._free) > len(self._woken):
                return self._free.popleft()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            with self._lock:
                if waiter in self._woken:  # its promise goes to the next waiter
                    self._woken.discard(waiter)
                    self._wake()
                else:
                    self._waiters.remove(waiter)
            raise
        with self._lock:
            self._woken.discard(waiter)
            return self._free.popleft()

    def _wake(self) -> None:
        """Wake a waiter per free item not promised yet (under the lock)."""
        while self._waiters and len(self._free) > len(self._woken):
            waiter = self._waiters.popleft()
            try:
                waiter.get_loop().call_soon_threadsafe(_wake_up, waiter)
            except RuntimeError:  # its loop is closed: that caller is gone
                continue
            self._woken.add(waiter)

    def _forget_gone(self) -> None:
        """Drop the waiters whose loop is closed: they will take nothing (under the
        lock)."""
        gone = {w for w in (*self._waiters, *self._woken) if w.get_loop().is_closed()}
        if gone:
            self._waiters = deque(w for w in self._waiters if w not in gone)
            self._woken -= gone
            self._wake()


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a cancelled waiter passes its promise on itself
        waiter.set_result(None)


class SandboxPool:
    """`size` sandboxes for `policy`; see the module docstring.

    `size` is at most `MAX_SIZE` (1024). `isolate` is `process`, `none` or None (the
    policy's default). `max_waiting` bounds the callers waiting for a sandbox (None:
    unbounded). Raises UsageError for a bad size or bound; `run` raises PoolBusy when
    the bound is reached and UsageError once the pool is closed. Close with
    `await pool.aclose()` or `async with`.
    """

    def __init__(self, policy: Policy | None = None, size: int = 4, *,
                 isolate: str | None = None, max_waiting: int | None = 1024,
                 observers: Sequence[RunObserver] = ()) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
            raise UsageError(f"SandboxPool size: expected a whole number from 1 to {MAX_SIZE}, "
                             f"not {size!r}")
        if max_waiting is not None and (isinstance(max_waiting, bool) or
                                        not isinstance(max_waiting, int) or max_waiting < 0):
            raise UsageError(f"SandboxPool max_waiting: expected a whole number >= 0 or None, "
                             f"not {max_waiting!r}")
        self.policy = policy = policy_argument(policy, "SandboxPool")
        self.size = size
        self.max_waiting = max_waiting
        self._sandboxes: list[SandboxLike] = [
            make_sandbox(policy, isolate, observers) for _ in range(size)]
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="stockade-pool")
        self._idle: _Idle[SandboxLike] = _Idle(self._sandboxes)
        self._closed = False
        self._closing: concurrent.futures.Future[None] | None = None

    async def warm(self, module: str | Path | bytes | None = None) -> None:
        """Make every sandbox ready now rather than on its first run: start isolated
        workers, and compile `module` (or take it from the AoT cache) ahead."""
        loop = asyncio.get_running_loop()

        def prepare(sandbox: Any) -> None:
            if hasattr(sandbox, "load") and module is not None:
                sandbox.load(module)
            elif hasattr(sandbox, "protections"):
                sandbox.protections()  # starts the worker and waits until it is ready

        if module is not None and hasattr(self._sandboxes[0], "load"):
            await loop.run_in_executor(self._executor, prepare, self._sandboxes[0])
            return  # in-process sandboxes share one engine: one load warms them all
        await asyncio.gather(*(loop.run_in_executor(self._executor, prepare, sandbox)
                               for sandbox in self._sandboxes))

    async def _call(self, work: Any) -> Result:
        if self._closed:
            raise UsageError("this SandboxPool is closed")
        idle = self._idle
        waiting = idle.waiting
        if self.max_waiting is not None and waiting >= self.max_waiting \
                and not idle.available():
            raise PoolBusy(f"all {self.size} sandboxes are busy and {waiting} callers "
                           "are waiting; try again later")
        sandbox = await idle.take()
        if self._closed:
            # Closed while this caller waited: the sandbox goes on to the next waiter,
            # who is refused too (the first got RuntimeError from the executor shut down
            # and kept the sandbox, and the rest waited for ever: found by review).
            idle.put(sandbox)
            raise UsageError("this SandboxPool is closed")
        # The sandbox goes back from the run's thread as it ends, even after a
        # cancellation, and whether or not this loop is still there.
        try:
            result: Result = await run_in_thread(
                lambda: work(sandbox), self._executor, on_done=lambda: idle.put(sandbox))
        except ExecutorShutDown:  # closed as the run was handed over: it was given back
            raise UsageError("this SandboxPool is closed") from None
        return result

    async def run(self, module: str | Path | bytes, invocation: Invocation | None = None
                  ) -> Result:
        """Run the module once on a free sandbox (waiting for one); see `Sandbox.run`."""
        return await self._call(lambda sandbox: sandbox.run(module, invocation))

    async def run_python(self, code: str, *, files: Mapping[str, str | bytes] | None = None,
                         args: Sequence[str] = (), stdin: bytes | str = b"",
                         env: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> Result:
        """Run Python source in CPython for WASI on a free sandbox; see
        `Sandbox.run_python` (with `files`, a one-off sibling sandbox carries the grant)."""
        from ..sandbox.python import run_python

        return await self._call(lambda sandbox: run_python(
            sandbox, code, files=files, args=args, stdin=stdin, env=env))

    async def aclose(self) -> None:
        """Wait for runs in progress, then close every sandbox. Safe twice: a second call
        returns when the first has closed the pool, not before."""
        self._closed = True
        if self._closing is None:
            # A thread's future, not the loop's: a second call may come from another loop.
            self._closing = concurrent.futures.Future()
            threading.Thread(target=self._shut_down_into, args=(self._closing,),
                             name="stockade-pool-close", daemon=True).start()
        await asyncio.shield(asyncio.wrap_future(self._closing))

    def _shut_down_into(self, done: concurrent.futures.Future[None]) -> None:
        try:
            self._shutdown()
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        for sandbox in self._sandboxes:
            sandbox.close()

    @property
    def closed(self) -> bool:
        """Whether it was closed (runs then raise UsageError)."""
        return self._closed

    async def __aenter__(self) -> SandboxPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
