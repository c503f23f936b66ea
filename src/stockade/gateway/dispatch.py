"""`Dispatcher`: runs guests on a pool of threads so the event loop never waits on one.

wasmtime releases the GIL while wasm runs, so guests on different threads run in
parallel and a long guest holds only its own thread. At most `threads` run at once;
up to `max_queue` more wait (503 beyond that). The wait is bounded by a backstop
timeout (504): the guest's own deadline normally ends it first.

Runs wait in one queue per tenant, served in turn (a tenant holding no thread first),
and where several tenants' functions may run (`share_among`) one tenant holds at most
all threads but one, whether the others have runs yet or not: the worker pool's
`tenant_share` rule. A single queue let a tenant keeping many runs queued (within its
quotas, or with none) delay every other tenant's run behind its whole backlog, and a
share counted only among tenants with runs let one take every thread while the others
were idle, whose next runs then waited out its runs (found by review). The queue's
bound is shared the same way: when it is full, a run of a tenant with fewer queued takes
the place of the newest run of the tenant with the most, which is refused (503) instead;
one tenant filling it refused every other tenant's runs, their threads idle (review).
Runs are not preempted.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from .problem import GatewayTimeout, Unavailable

__all__ = ["Dispatcher"]

logger = logging.getLogger("stockade.gateway")

T = TypeVar("T")
_Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class Dispatcher:
    """A bounded thread pool for guest runs; `pending` counts running plus queued."""

    def __init__(self, threads: int, max_queue: int) -> None:
        self.threads = threads
        self.max_queue = max_queue
        self.pending = 0
        self._cond = threading.Condition()  # `pending` drops on guest threads
        self._queues: dict[str | None, collections.deque[_Job]] = {}  # tenant -> its runs
        self._running: dict[str | None, int] = {}  # tenant -> threads its runs hold
        self._turn: collections.deque[str | None] = collections.deque()  # tenants queued
        self._share = threads  # threads one tenant may hold (`share_among`)
        self._workers: list[threading.Thread] = []
        self._closed = False

    def share_among(self, tenants: Collection[str | None]) -> None:
        """The tenants whose functions may run here (the manifest's): with two or more,
        one holds at most all threads but one."""
        count = len(set(tenants))
        with self._cond:
            self._share = self.threads if count < 2 else max(1, self.threads - 1)
            self._cond.notify_all()
        if count > 1 and self.threads < 2:
            logger.warning("%d tenants share 1 guest thread: while one's run holds it, the "
                           "others' wait; raise [server] threads", count)

    @property
    def queued(self) -> int:
        """Runs waiting for a thread."""
        return max(0, self.pending - self.threads)

    async def run(self, fn: Callable[[], T], timeout: float | None,
                  tenant: str | None = None) -> T:
        """`fn()` on a guest thread, in `tenant`'s turn. Raises Unavailable when the
        queue is full or the pool is closed, GatewayTimeout when no result came within
        `timeout` seconds (a queued run is then cancelled; a running one finishes on its
        own deadline)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        job = (fn, future)
        with self._cond:  # against a `close` on another thread (the service's)
            if self._closed:
                raise Unavailable("the server is shutting down", 1.0, reason="draining")
            if self.pending >= self.threads + self.max_queue:
                pushed = self._push_out(tenant)
                if pushed is None:
                    raise Unavailable(self._full(), 1.0, reason="queue")
                # Cancelled meanwhile (its `_done` waits for the lock): let go already.
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    pushed.set_exception(Unavailable(self._full(), 1.0, reason="queue"))
            self.pending += 1
            queue = self._queues.get(tenant)
            if queue is None:
                queue = self._queues[tenant] = collections.deque()
                self._turn.append(tenant)
            queue.append(job)
            if len(self._workers) < self.threads:
                self._start_worker()
            self._cond.notify()
        future.add_done_callback(functools.partial(self._done, tenant, job))
        wrapped = asyncio.wrap_future(future)
        if timeout is None:
            return await wrapped
        try:
            return await asyncio.wait_for(wrapped, timeout)
        except TimeoutError:
            raise GatewayTimeout(f"no response within {timeout:g} s") from None

    def _full(self) -> str:
        return (f"all {self.threads} guest threads are busy and {self.max_queue} requests "
                "are queued")

    def _push_out(self, tenant: str | None) -> concurrent.futures.Future[Any] | None:
        """With the queue full (the condition held): take out the newest run of the
        tenant with the most queued, for a run of `tenant` with fewer by two or more (its
        run then queued, one more), and return its future to refuse; None: `tenant`
        has as many as the longest, and is refused. One tenant filling the queue
        (no concurrency quota, or a large one) refused every other tenant's runs."""
        longest = max(self._turn, key=lambda queued: len(self._queues[queued]), default=None)
        if longest is None or longest == tenant:
            return None
        queue = self._queues[longest]
        own = self._queues.get(tenant)
        if len(queue) <= (0 if own is None else len(own)) + 1:
            return None
        _, future = queue.pop()
        if not queue:
            del self._queues[longest]
            self._turn.remove(longest)
        return future

    def _start_worker(self) -> None:
        worker = threading.Thread(target=self._serve, daemon=True,
                                  name=f"stockade-guest_{len(self._workers)}")
        self._workers.append(worker)
        worker.start()

    def _done(self, tenant: str | None, job: _Job, future: concurrent.futures.Future[Any]
              ) -> None:
        # On the guest thread, or on the loop when a queued run is cancelled: then taken
        # out of its queue, which held it (and all its closure holds) until its turn.
        with self._cond:
            self.pending -= 1
            queue = self._queues.get(tenant)
            if future.cancelled() and queue is not None:
                with contextlib.suppress(ValueError):  # a worker took it meanwhile
                    queue.remove(job)
                if not queue:
                    del self._queues[tenant]
                    self._turn.remove(tenant)

    def _next(self) -> tuple[str | None, _Job] | None:
        """The next run to start (the condition held): that of the first tenant in turn
        holding no thread, else of the first with a thread left to it (`_share`); the
        tenant goes to the end of the turn."""
        running, turn = self._running, self._turn
        free = [tenant for tenant in turn if tenant not in running]
        if not free:
            free = [tenant for tenant in turn if running[tenant] < self._share]
            if not free:
                return None
        tenant = free[0]
        turn.remove(tenant)
        queue = self._queues[tenant]
        job = queue.popleft()
        if queue:
            turn.append(tenant)
        else:
            del self._queues[tenant]
        return tenant, job

    def _serve(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
                while picked is None:
                    if self._closed and not self._queues:
                        return
                    self._cond.wait()
                    picked = self._next()
                tenant, (fn, future) = picked
                self._running[tenant] = self._running.get(tenant, 0) + 1
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except Exception as exc:  # noqa: BLE001 - handed to the awaiting side
                        future.set_exception(exc)
                    except BaseException as exc:  # noqa: BLE001 - asyncio would re-raise it
                        # out of the event loop, ending the server
                        future.set_exception(RuntimeError(f"the run raised {exc!r}"))
            finally:
                with self._cond:
                    held = self._running[tenant] - 1
                    if held:
                        self._running[tenant] = held
                    else:
                        del self._running[tenant]
                    self._cond.notify_all()  # a thread left to another tenant

    def close(self, wait: bool = True) -> None:
        """Refuse new runs and, with `wait`, let running and queued ones finish (without,
        queued ones are cancelled). Safe twice."""
        with self._cond:
            self._closed = True
            if not wait:  # each cancelled run leaves its queue (`_done`): a copy first
                for future in [future for queue in self._queues.values()
                               for _, future in queue]:
                    future.cancel()
            self._cond.notify_all()
            workers = list(self._workers)
        if wait:
            for worker in workers:
                if worker is not threading.current_thread():
                    worker.join()
