"""asyncio for sandboxes: `AsyncSandbox` and `run_in_thread`, one execution model.

A run is the same blocking `run()` of the sandbox underneath, made on a worker thread
(wasmtime releases the GIL, so runs on threads proceed in parallel): there is no
second, async copy of the sandbox's logic. Cancelling the awaiting task (or an
`asyncio.wait_for` timeout) stops the guest: an in-process run through its
`CancelToken` (the engine's epoch and the store's deadline callback, see
`stockade.sandbox.cancel`; the run is reported with outcome `error`, "cancelled by the
caller"), an isolated one through the same token, which kills that run's worker (never
the sandbox's current one: another caller's run could be in progress). The cancelled await
returns once the guest has stopped (at most `CANCEL_GRACE` seconds later), so a pool's
sandbox is free again when the caller sees the cancellation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import UsageError
from .arguments import policy_argument
from .cancel import CancelToken, cancellable

if TYPE_CHECKING:
    from ..invocation import Invocation
    from ..policy import Policy
    from ..result import Result

__all__ = ["AsyncSandbox", "run_in_thread", "CANCEL_GRACE", "ExecutorShutDown"]

T = TypeVar("T")


class ExecutorShutDown(RuntimeError):
    """`run_in_thread` was given an executor that is shut down: nothing ran."""


# How long a cancelled await waits for its guest to stop before propagating anyway (a
# guest in code no deadline reaches: an engine with neither epochs nor a tripwire, or
# a first compile).
CANCEL_GRACE = 2.0


async def run_in_thread(call: Callable[[], T],
                        executor: Executor | None = None,
                        on_done: Callable[[], None] | None = None) -> T:
    """Await `call()` on a thread of `executor` (default: the loop's).

    On cancellation the run is stopped (its `CancelToken`: a run still waiting for the
    sandbox never starts) and the cancellation propagates once the thread is done or
    after `CANCEL_GRACE` seconds. `on_done` (which needs an `executor`) runs once the
    call has finished or was cancelled before it began, however the await ended, on
    the thread that ended it, never the loop: the loop may be gone by then (a pool
    returns the sandbox then, not before). Raises ExecutorShutDown when `executor` is
    shut down (`on_done` has run then).
    """
    token = CancelToken()
    return await _awaited(_started(call, executor, on_done, token), token)


def _started(call: Callable[[], T], executor: Executor | None,
             on_done: Callable[[], None] | None, token: CancelToken) -> asyncio.Future[T]:
    """`call()` submitted to `executor` under `token` (see `run_in_thread`)."""

    def cancellable_call() -> T:
        with cancellable(token):
            return call()

    loop = asyncio.get_running_loop()
    if executor is None:
        if on_done is not None:
            raise UsageError("run_in_thread: on_done needs an executor")
        return loop.run_in_executor(None, cancellable_call)
    try:
        submitted = executor.submit(cancellable_call)
    except RuntimeError:  # shut down: nothing will run
        if on_done is not None:
            on_done()
        raise ExecutorShutDown("the executor is shut down") from None
    if on_done is not None:
        # Called on the run's thread as it ends (or at once, if it is over already):
        # a callback on the loop was lost with the loop (`asyncio.run` returned while
        # the thread went on), and with it a pool's sandbox.
        submitted.add_done_callback(lambda _: on_done())
    return asyncio.wrap_future(submitted, loop=loop)


async def _awaited(future: asyncio.Future[T], token: CancelToken) -> T:
    """The result of a run `_started` (see `run_in_thread`)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        await asyncio.wait([future], timeout=CANCEL_GRACE)
        raise


class AsyncSandbox:
    """An asyncio front for a sandbox: ``result = await AsyncSandbox(policy).run(m, inv)``.

    Wraps `sandbox` (a `Sandbox` or `IsolatedSandbox`), or makes one for `policy` with
    `make_sandbox(policy, isolate)`. Runs go one at a time through a single thread, like
    the sandbox's own runs; use `SandboxPool` for several at once. Cancelling an awaiting
    task stops the guest (see the module docstring); `close()` stops them all, `aclose()`
    (or `async with`) lets them finish.
    """

    def __init__(self, policy: Policy | None = None, *, isolate: str | None = None,
                 sandbox: Any = None) -> None:
        if sandbox is None:
            from ..isolate.factory import make_sandbox

            sandbox = make_sandbox(policy_argument(policy, "AsyncSandbox"), isolate)
        self.sandbox = sandbox
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="stockade-async")
        # Runs are taken, and closing begins, under the lock: `close` may come from any
        # thread, and a run taken as it closed escaped its cancellation (found by review).
        # Reentrant: a run that ends before `_call` has left it forgets its token there.
        self._lock = threading.RLock()
        self._closed = False  # no more runs are taken
        self._shut = False  # the sandbox's close is on its way
        self._tokens: set[CancelToken] = set()  # of the runs not yet done, for `close`

    async def _call(self, call: Callable[[], Result]) -> Result:
        token = CancelToken()
        with self._lock:
            if self._closed:
                raise UsageError("this AsyncSandbox is closed")
            self._tokens.add(token)
            future = _started(call, self._executor, lambda: self._forget(token), token)
        return await _awaited(future, token)

    def _forget(self, token: CancelToken) -> None:
        with self._lock:
            self._tokens.discard(token)

    async def run(self, module: str | Path | bytes, invocation: Invocation | None = None
                  ) -> Result:
        """Run the module once; see `Sandbox.run`."""
        return await self._call(lambda: self.sandbox.run(module, invocation))

    async def run_python(self, code: str, *, files: Mapping[str, str | bytes] | None = None,
                         args: Sequence[str] = (), stdin: bytes | str = b"",
                         env: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> Result:
        """Run Python source in CPython for WASI; see `Sandbox.run_python`."""
        from .python import run_python

        return await self._call(
            lambda: run_python(self.sandbox, code, files=files, args=args, stdin=stdin, env=env))

    def close(self) -> None:
        """Close now, without waiting (also on the event loop): the run in progress and
        those waiting are stopped, each caller getting its Result (outcome `error`,
        cancelled), and the sandbox is closed on its thread once they have ended. Later
        runs raise UsageError. Safe twice, and during `aclose` (which then stops waiting
        for the runs)."""
        with self._lock:
            self._closed = True
            tokens = list(self._tokens)
            if not self._shut:
                self._shut = True
                # On the runs' thread, after them: an isolated sandbox's close waits for
                # its run.
                self._executor.submit(self.sandbox.close)
                self._executor.shutdown(wait=False)
        for token in tokens:
            token.cancel()

    async def aclose(self) -> None:
        """Close, waiting for the runs taken already to end. Safe twice, and after
        `close` (then it returns once the sandbox is closed)."""
        with self._lock:
            self._closed = self._shut = True
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self.sandbox.close()

    @property
    def closed(self) -> bool:
        """Whether it was closed (runs then raise UsageError)."""
        return self._closed

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
