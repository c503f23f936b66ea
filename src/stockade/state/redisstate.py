"""`RedisState`: quotas and circuit breakers shared by every replica through one Redis.

One admission is one round trip: a Lua script (`scripts.ADMIT`, by EVALSHA) checks the
function's breaker and the function's and tenant's concurrency, CPU and rate (GCRA)
with Redis's clock, and takes the slots. Concurrency slots are leases: members of a
sorted set scored by their expiry (`GateSpec.lease_seconds`: as long as the gateway may
hold the request, a run that starts late included, plus a grace), so a replica that dies
holding slots gives them back once they expire. Releases (slots to give
back, CPU to charge) are not waited for: the next admission of the same tenant carries
them as extra arguments of its own script, which gives them back before deciding (a
slot given back counts for it), so a request is one script in one round trip. The
releases no admission took within `RELEASE_DELAY` (`credit.HOLD` while their tenant
spends a credit here) are sent by a timer on the event loop, one script per tenant (at
once, off a loop); while every tenant they belong to spends a credit, they wait for
its renewal instead (due within a hold; a flush of its own was about every other
hand-off to the state thread, measured at 1,000 requests/s on a gate with a breaker:
1 hand-off in 11 requests before, 1 in 21 after). Only a release of the admission's
own tenant rides with it: its keys share the tenant's hash tag, so one script still
touches one Redis Cluster slot. On an event loop the round trips run on one thread of
the state's own, in order; admissions asked for while it is busy wait for it in one
pipeline (one at most, and one flush of releases, run only when no admission waits:
the admissions carry every release and refund queued, a flush of their own ahead of
them made each wait for three round trips), and each round trip has the whole
`timeout` from when it is sent (a wait for a connection being made is not the store's
time, and lasts until the last admission of the pipeline gives up). A request waits
no longer than its own `timeout` from when it asked, its time queued included (queued
round trips each had a timeout of their own, and the last of five was answered after
five, found by review); past it, it gets
`on_unavailable`, and what the store grants it later goes back (an admission not sent
yet is not sent, the releases and refund it carries are). Only a round trip taking
longer than `timeout` marks the store down: a pipeline given the deadline of its
earliest request, its time queued counted as the store's, had a store answering each
round trip well within the timeout marked down under two requests at once. A slot
may stay taken that much after its response (never less: the limit holds). A round
trip that fails after some of its replies were read acts on them (what they granted
goes back: a resend of NOSCRIPT calls past the round trip's time dropped an `ok`
already read, and the slot stayed taken for the lease's time); releases and refunds a
round trip refused before sending anything (marked down, a connection not made yet or
failing) wait for the next one. Releases it sent without reading their answers may
have run or not: their slots go with the next one again (a lease removed twice is
removed once), their CPU charges and refunds do not (they would count twice). Dropped,
an outage of more than a second kept a tenant's slots taken until their leases
expired (found by review).

What is decided here, and why the limits hold: refusals are cached briefly
(`redisgate`). On an event loop, a gate that takes two or more
admissions per `credit.HOLD` window asks Redis for a few at once while its tenant is
far from its limits, and spends them here for `credit.HOLD` seconds (see `credit`:
Redis counted them all when it granted them; what is not spent goes back). A gate
whose function and tenant have no quota and no breaker asks Redis nothing.

The gateway's state is connected, its scripts loaded, before it serves (`connect`,
called by `open_state`): a fresh replica's first requests are not left to wait for a
handshake, and a store down at start-up is marked so at once.

When Redis does not answer within the timeout (or answers with an error: a Lua error,
a key of the wrong type), the request gets `on_unavailable`: `fail_closed` raises
StateUnavailable (503), `fail_open` admits through this server's own limits
(`LocalState`, one replica's share of nothing: each replica applies the whole quota).
Either way it is counted (`on_fallback`) and logged once per outage; Redis is tried
again at most every `RETRY_INTERVAL` seconds, so a dead store costs a request at most
one timeout, and is used again as soon as it answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, NoReturn

import redis

from ..telemetry.breaker import (
    BreakerConfig,
    BreakerEntry,
    Decision,
    ProbeGrants,
    Transition,
    iso_time,
)
from .base import GateSpec, Lease, OnTransition, StateBackend
from .breakers import breaker_entries, reset_breakers
from .client import (
    AnswerLate,
    ConnectionPending,
    RoundTripFailed,
    answer_late,
    connect,
    continued,
    round_trip,
    store_deadline,
)
from .credit import HOLD, MAX_GRANT
from .errors import StateUnavailable
from .keys import PREFIX, TenantKeys
from .local import LocalState
from .quota import Quota
from .redisgate import REFUSAL_CACHE, Grant, RedisGate
from .resp import Releases, bulks, evalsha, number, script_load
from .scripts import ADMIT, COUNTED, PROBE_CLEAN, PROBE_UNUSED, REFUND, RELEASE, VIOLATION
from .settings import StateSettings

__all__ = ["RedisState", "RedisGate", "RedisBreakers", "REFUSAL_CACHE", "RETRY_INTERVAL"]

logger = logging.getLogger("stockade.state")
RETRY_INTERVAL = 1.0  # seconds between attempts while Redis is unreachable
RELEASE_DELAY = 0.002  # seconds a release waits for an admission to carry it
# A connection's steps (name lookup, connect, TLS, AUTH, CLIENT SETNAME, CLIENT SETINFO
# twice, SELECT), each within `timeout`: how long a wait for one may last in all.
CONNECT_STEPS = 8
_LOG_INTERVAL = 10.0  # seconds between log lines about failing scripts, late answers
_PING = b"*1\r\n$4\r\nPING\r\n"


class _NotSent(RoundTripFailed):
    """A round trip that failed before anything of it was sent: the store is marked
    down, or its connection failed as it was made (which marks it down)."""


class _Connecting(_NotSent):
    """A round trip's wait for a connection being made ended first: nothing was sent,
    and the store did not fail."""


class _PartlyAnswered(RoundTripFailed):
    """A round trip that failed after some of its replies were read: `replies`, by
    call, None for each call whose answer was not read (it may have run or not)."""

    def __init__(self, message: str, replies: list[Any]) -> None:
        super().__init__(message)
        self.replies = replies


class _Queued(NamedTuple):
    """A release's or refund's call for a round trip, and the releases it gives back
    (None for a refund): what may be sent again when its answer was not read."""

    call: bytes
    releases: Releases | None


class _Asked:
    """One request's admission on the event loop, answered through `future`: its call
    (`call`, None until built, see `_send_admissions`; for one admission, or for
    `grant`, sized then), and the releases and refund the call carries. `gave_up`: the
    request waits no more (its time is over, or it was cancelled); read by the state
    thread, which then sends only what it carries. `deadline`: when it gives up
    (monotonic)."""

    __slots__ = ("gate", "lease_id", "pending", "grant", "future", "deadline", "call",
                 "releases", "refund", "gave_up")

    def __init__(self, gate: RedisGate, lease_id: str, pending: int, grant: Grant | None,
                 future: asyncio.Future[Any], deadline: float) -> None:
        self.gate = gate
        self.lease_id = lease_id
        self.pending = pending
        self.grant = grant
        self.future = future
        self.deadline = deadline
        self.call: bytes | None = None
        self.releases: Releases | None = None
        self.refund = 0
        self.gave_up = False


class _Batch:
    """Admissions sent in one pipeline: those asked for until the state thread takes it."""

    __slots__ = ("asked",)

    def __init__(self, asked: list[_Asked]) -> None:
        self.asked = asked


class RedisState(StateBackend):
    """Quotas and breakers in the Redis `settings.backend` names; `fallback` holds this
    server's own limits for `fail_open`; `on_fallback(policy)` counts each request the
    store could not decide."""

    name = "redis"

    def __init__(self, settings: StateSettings, fallback: LocalState,
                 on_fallback: Callable[[str], None] | None = None,
                 env: Mapping[str, str] | None = None, prefix: str = PREFIX) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.fallback = fallback
        self.prefix = prefix
        self.probe_timeout = 300.0
        self.cooldown = BreakerConfig().cooldown  # how long an opened breaker refuses
        self._on_fallback = on_fallback
        self.client = connect(settings, env)
        self.admit_script = self.client.register_script(ADMIT)
        self.refund_script = self.client.register_script(REFUND)
        self.release_script = self.client.register_script(RELEASE)
        self.violation_script = self.client.register_script(VIOLATION)
        self.probe_script = self.client.register_script(PROBE_CLEAN)
        self.unused_script = self.client.register_script(PROBE_UNUSED)
        self.counted_script = self.client.register_script(COUNTED)
        self._ids = itertools.count()
        self._id_prefix = f"{os.urandom(6).hex()}:"
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._reload_after = 0.0  # scripts are not loaded again before (`_pipeline`)
        self._down_since: float | None = None
        self._decided_alone = 0
        self._logged_error = 0.0
        self._logged_late = 0.0
        self._logged_drop = 0.0
        self._drops = 0  # releases and refunds lost since the last line saying so
        # Probes this process was let through: the `probe_at` Redis stored for each, and
        # the run holding it (None until the gateway names it, `RedisBreakers.probe_held`).
        self._probes: ProbeGrants[str] = ProbeGrants()
        self._open: dict[tuple[str, str], float] = {}  # ident -> monotonic until
        self._breakers: RedisBreakers | None = None
        self._closed = False
        self._client_closed = False  # set as `close` closes the client
        # Breaker records waiting for a connection (`_send_when_connected`): each one's
        # thread and when it gives up (monotonic), for `close` to wait for.
        self._sending: dict[threading.Thread, float] = {}
        self._releases: dict[str, Releases] = {}  # to send, by tenant quota key
        self._refunds: list[bytes] = []  # unspent admissions of credits, to send
        # Releases and refunds, as calls, that a round trip failed to deliver (`_hold`),
        # each with the releases it gives back (None for a refund): for the next one.
        self._held: list[_Queued] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop admissions run on
        self.holding: set[RedisGate] = set()  # gates with a live credit
        self._release_lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._admissions: list[_Asked] = []
        self._batch: _Batch | None = None  # sent, not yet taken by the state thread
        self._batch_lock = threading.Lock()
        self._flush_queued = False  # a flush waits for the state thread
        # Round trips for the event loop: one thread keeps them in order (releases
        # before the admissions after them); it never runs guest code.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "stockade-state")

    @property
    def where(self) -> str:
        """The store as people read it (no credentials: the URL never holds them)."""
        return self.settings.backend

    def lease_id(self) -> str:
        """A lease id unique across replicas."""
        return f"{self._id_prefix}{next(self._ids)}"

    def connect(self) -> bool:
        """Make the connection to the store and load the scripts now, before the gateway
        serves (`open_state`): a fresh replica's first requests waited for the handshake
        (against a store answering each command in a third of the timeout, longer than
        their time), and under `fail_open` the local fallback admitted them though the
        store never failed (found by review). Waits as long as a connection's steps may
        take, each within `timeout`; a store that fails is marked down and logged, so
        `on_unavailable` applies from the first request, without a wait. Returns
        whether the store answered."""
        scripts = (ADMIT, REFUND, RELEASE, VIOLATION, PROBE_CLEAN, PROBE_UNUSED, COUNTED)
        try:
            replies = self._pipeline([script_load(source) for source in scripts],
                                     CONNECT_STEPS * self.settings.timeout,
                                     even_if_down=True)
        except RoundTripFailed:
            return False  # logged when the store failed; else still connecting
        return not any(isinstance(reply, Exception) for reply in replies)

    def run(self, script: Any, keys: list[str], args: list[str],
            late: Callable[[Any], None] | None = None, keep: bool = False) -> Any:
        """Run `script` (registered with this state's client), answered within `timeout`
        of the call, a wait for a connection being made included, as an admission off
        an event loop is (`admit`): past it RoundTripFailed, and the store's answer, due
        within `timeout` of the script's send, is read on a thread of its own and given
        to `late` (dropped when None or an error). A breaker's record waited for a fresh
        connection, then a whole timeout more. `keep`: a change the store must get (a
        violation, a probe's end): when the wait for a connection being made ends
        first, it is sent once the connection is ready, its answer given to `late` (a
        violation was lost so, found by review). Raises RoundTripFailed when Redis is
        down (then not tried again for `RETRY_INTERVAL` s) or the script failed."""
        answer_by = time.monotonic() + self.settings.timeout
        call = evalsha(script.sha, len(keys) + len(args), len(keys), bulks(keys), bulks(args))

        def answered(replies: list[Any]) -> None:
            if late is not None and not isinstance(replies[0], Exception):
                late(replies[0])

        try:
            reply = self._pipeline([call], answer_by - time.monotonic(), answer_by,
                                   answered, (script.script,))[0]
        except _Connecting:
            if keep:
                self._send_when_connected(call, script.script, answered)
            raise
        if isinstance(reply, Exception):
            self._script_failed(reply)
        return reply

    def _send_when_connected(self, call: bytes, source: str,
                             answered: Callable[[list[Any]], None]) -> None:
        """On a thread of its own: `call` (of the script `source`), nothing of it sent
        yet, sent once the connection being made is ready (as long as its steps may
        take, and a timeout for the store's answer), its replies given to `answered`;
        lost only when the store fails (marked down and logged). `close` waits for it
        that long (closed meanwhile, it was lost, logged as a failed script)."""
        deadline = time.monotonic() + (CONNECT_STEPS + 1) * self.settings.timeout

        def send() -> None:
            try:
                try:
                    replies = self._pipeline([call], CONNECT_STEPS * self.settings.timeout,
                                             sources=(source,))
                except RoundTripFailed:
                    with self._lock:  # said by `close` when it gave up waiting for it
                        unsaid = self._client_closed and thread in self._sending
                    if unsaid:
                        self._lost_at_close(1)
                    return  # else logged when the store failed
                try:
                    answered(replies)
                except Exception:  # noqa: BLE001 - a thread of its own: nobody to raise to
                    logger.exception("shared state %s: a late answer could not be used",
                                     self.where)
            finally:
                with self._lock:
                    self._sending.pop(thread, None)

        thread = threading.Thread(target=send, daemon=True, name="stockade-state-send")
        with self._lock:
            self._sending[thread] = deadline
        try:
            thread.start()
        except RuntimeError:
            with self._lock:
                self._sending.pop(thread, None)
            logger.error("shared state %s: a call waiting for a connection was dropped "
                         "(no thread to send it)", self.where)

    def _lost_at_close(self, count: int) -> None:
        logger.error("shared state %s: %d breaker record%s (a violation, a probe's end) "
                     "waiting for a connection %s lost: the state closed first", self.where,
                     count, "" if count == 1 else "s", "was" if count == 1 else "were")

    @contextmanager
    def _round_trip(self, wait: float | None = None, answer_by: float | None = None,
                    even_if_down: bool = False) -> Iterator[None]:
        """One exchange with Redis, within one `timeout` in all from its first request
        sent (a reload of the scripts included), after a wait for a connection being
        made of `wait` seconds at most (`timeout` when None), its caller waiting for
        answers until `answer_by` at most, see `client.round_trip`: refused at once
        while it is marked down (unless `even_if_down`); a connection still being
        made, or the caller's time over first (`AnswerLate`), raises RoundTripFailed
        (the store is not marked down: it has not failed); a lost connection or one
        taking longer marks it down and raises RoundTripFailed; a failed script raises
        through `_script_failed`; a success after an outage says it came back."""
        if self._retry_at and time.monotonic() < self._retry_at and not even_if_down:
            raise _NotSent(f"shared state {self.where} is unreachable")
        try:
            with round_trip(self.settings.timeout, wait, answer_by):
                yield
        except ConnectionPending as exc:
            raise _Connecting(f"shared state {self.where}: {exc}") from None
        except AnswerLate as exc:
            raise RoundTripFailed(f"shared state {self.where}: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._went_down(exc)
            raise RoundTripFailed(f"shared state {self.where} is unreachable") from None
        # A reply nested past the stack; RESP redis-py cannot read (`:x`, bytes that are
        # not UTF-8: ValueError, UnicodeError).
        except (redis.RedisError, RecursionError, ValueError) as exc:
            self._script_failed(exc)
        if self._retry_at:
            self._came_back()

    def _script_failed(self, exc: BaseException) -> NoReturn:
        """A Lua error, a key of the wrong type: this decision fails, the store is up.
        After `close` closed the client, what fails is the closed connection: said by
        whoever loses something to it."""
        now = time.monotonic()
        if not self._client_closed and now - self._logged_error >= _LOG_INTERVAL:
            self._logged_error = now
            logger.error("shared state %s: a script failed: %s", self.where, exc)
        raise RoundTripFailed(f"shared state {self.where} failed to decide") from None

    def _went_down(self, exc: BaseException) -> None:
        if self._closed:
            return  # closing cuts round trips short: the store did not fail
        with self._lock:
            self._retry_at = time.monotonic() + RETRY_INTERVAL
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._decided_alone = 0
                what = ("each replica applies the whole quota alone" if
                        self.settings.on_unavailable == "fail_open" else "requests get 503")
                logger.error("shared state %s is unavailable (%s): %s, %s, until it "
                             "answers", self.where, exc, self.settings.on_unavailable, what)

    def _came_back(self) -> None:
        with self._lock:
            since, self._down_since, self._retry_at = self._down_since, None, 0.0
            if since is not None:
                logger.warning("shared state %s answers again after %.1f s (%d requests "
                               "decided without it)", self.where, time.monotonic() - since,
                               self._decided_alone)

    def unavailable(self, gate: RedisGate, reason: str) -> Lease:
        """The request `gate` could not decide through Redis: `on_unavailable` decides."""
        policy = self.settings.on_unavailable
        self._decided_alone += 1
        if self._on_fallback is not None:
            self._on_fallback(policy)
        if policy == "fail_open":
            return gate.fallback.admit()
        raise StateUnavailable(f"{reason}; the gateway refuses requests it cannot count "
                               "(state.on_unavailable = \"fail_closed\")", 1.0)

    # -- releases, carried by admissions ------------------------------------------

    def queue_release(self, gate: RedisGate, lease_id: str, cpu_seconds: str,
                      flush: bool = True) -> None:
        """Send this release of `gate`'s lease with the next admission of its tenant,
        or within `RELEASE_DELAY` (at once when called off an event loop); with `flush`
        False, with the next flush the caller sees to."""
        tenant = gate.keys.tenant_quota
        with self._release_lock:
            batch = self._releases.get(tenant)
            if batch is None:
                batch = self._releases[tenant] = Releases(tenant, gate.keys.tenant_leases)
            batch.add(gate._function_leases, lease_id, cpu_seconds, gate._cpu_limit)
        if flush:
            self._flush_soon(tenant)

    def queue_refund(self, gate: RedisGate, tokens: int, flush: bool = True) -> None:
        """Give `tokens` unspent admissions of `gate`'s credit back with the next flush
        (which the caller sees to when `flush` is False)."""
        with self._release_lock:
            self._refunds.append(gate.refund(tokens))
        if flush:
            self._flush_soon(gate.keys.tenant_quota)

    def _flush_soon(self, tenant: str | None = None, at_least: float = 0.0) -> None:
        """Flush within `RELEASE_DELAY` on an event loop (within `credit.HOLD` when
        `tenant`, the quota key of the tenant whose release or refund this is, spends a
        credit here: its renewal, due by then, carries them; see `_flush_later`), at
        once off one. Only the tenant's own credit counts: any gate's made every
        tenant's releases wait a hold (one tenant's traffic kept another's slots taken,
        found by review); a timer due later is brought forward. Not before `at_least`
        seconds (on an event loop only)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._timer is not None and self._loop is not None and self._loop.is_closed():
                self._timer = None  # its loop ended: it never fires (found by review)
            if self._timer is None:
                self.flush()
            return
        self._loop = loop
        timer, now = self._timer, loop.time()
        if timer is not None and timer.when() <= now + max(RELEASE_DELAY, at_least):
            return  # soon enough for any release
        delay = max(RELEASE_DELAY, at_least)
        if tenant is not None and any(gate.keys.tenant_quota == tenant
                                      for gate in self.holding):
            delay = max(HOLD, at_least)
        if timer is not None:
            if timer.when() <= now + delay:
                return
            timer.cancel()
        self._timer = loop.call_later(delay, self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        if self._closed or not (self._releases or self._refunds or self._held):
            return
        if self._flush_queued:
            return  # the flush waiting for the state thread takes these too
        if not self._refunds and not self._held and self.holding:
            # Releases of tenants spending a credit ride with its renewal, due within a
            # hold (one round trip fewer on the state thread); while one waits its
            # slot stays taken here, never shorter. Traffic gone, the credit settles
            # within two holds and the next turn sends them.
            renewing = {gate.keys.tenant_quota for gate in self.holding}
            with self._release_lock:
                carried = all(tenant in renewing for tenant in self._releases)
            if carried:
                self._timer = asyncio.get_running_loop().call_later(HOLD, self._flush_later)
                return
        # One flush queued at most: one per timer had a slow store's thread fall further
        # behind with every release, the admissions queued after them all.
        self._flush_queued = True
        self._executor.submit(self._flush_turn)

    def _flush_next(self) -> None:
        """On the state thread: the queued releases and refunds go with the next round
        trip after the one running now (the flush queued already, one more, or the
        admissions waiting, see `_flush_turn`)."""
        if self._flush_queued:
            return
        self._flush_queued = True
        try:
            self._executor.submit(self._flush_turn)
        except RuntimeError:
            pass  # closing: `close` flushes them

    def _flush_turn(self) -> None:
        """On the state thread: the queued flush, unless admissions wait for the thread:
        they carry what is queued (`_send`). A flush of its own ahead of them made each
        wait for three round trips, not two, and a slow store answered them too late."""
        with self._batch_lock:
            waiting = self._batch is not None
        if waiting:
            self._flush_queued = False  # what is queued from now on needs another
            return
        self.flush()

    def _take_queued(self) -> list[_Queued]:
        """The releases and refunds queued, as calls (taken off their queues), those
        held from a round trip that failed first."""
        with self._release_lock:
            held, self._held = self._held, []
            batches, self._releases = self._releases, {}
            refunds, self._refunds = self._refunds, []
        sha = self.release_script.sha
        return held + [_Queued(batch.release(sha), batch) for batch in batches.values()] \
            + [_Queued(refund, None) for refund in refunds]

    def _hold(self, queued: list[_Queued], at_least: float = 0.0) -> None:
        """Releases and refunds (`queued`) a round trip failed to deliver: they go with
        the next round trip, and on an event loop a flush is due once the store may be
        tried again (not before `at_least` seconds). Dropped, a slot given back after
        a failed round trip (a grant read before it failed; a release held while the
        store was down, at the first retry that failed) stayed taken for the lease's
        time."""
        if not queued or self._closed:
            return
        with self._release_lock:
            self._held.extend(queued)
        loop = self._loop
        if loop is None:
            return  # off a loop: the next round trip carries them
        delay = max(at_least, self._retry_at - time.monotonic())
        try:
            loop.call_soon_threadsafe(self._flush_soon, None, delay)
        except RuntimeError:
            pass  # the loop is closed: the next round trip carries them

    def _carried(self, gate: RedisGate, releases: Releases | None,
                 refund: int) -> list[_Queued]:
        """The `releases` and `refund` an admission of `gate` carries, as calls of
        their own."""
        carried = []
        if releases is not None:
            carried.append(_Queued(releases.release(self.release_script.sha), releases))
        if refund:
            carried.append(_Queued(gate.refund(refund), None))
        return carried

    def _hold_unanswered(self, queued: Sequence[_Queued],
                         replies: Sequence[Any] | None = None) -> None:
        """After a round trip that failed once sent: the releases of `queued` whose
        `replies` were not read (None: none was) may have run or not, so their slots
        are held again, their CPU not (charged twice, see `Releases.slots_only`).
        Refunds are not: one that ran would give its admissions back twice. Its flush
        waits `RETRY_INTERVAL` at least: a store answering what cannot be read (not
        marked down) is not asked again at once, over and over."""
        sha = self.release_script.sha
        again: list[_Queued] = []
        for index, (_, releases) in enumerate(queued):
            if releases is not None and (replies is None or replies[index] is None):
                slots = releases.slots_only()
                again.append(_Queued(slots.release(sha), slots))
        self._hold(again, RETRY_INTERVAL)

    def _command(self, gate: RedisGate, lease_id: str, pending: int,
                 grant: Grant | None = None) -> tuple[bytes, Releases | None, int]:
        """`gate`'s admission (of one request, or asking for `grant`, sized now),
        carrying the queued releases of its tenant and the refund its last credit left
        (both taken off their queues, and returned with it)."""
        releases = None
        if self._releases:
            with self._release_lock:
                releases = self._releases.pop(gate.keys.tenant_quota, None)
        refund = gate.take_refund()
        want = 1 if grant is None else gate.wanted(grant)
        return gate.command(lease_id, pending, want, releases, refund, grant), releases, refund

    def admit(self, gate: RedisGate, lease_id: str, pending: int) -> Any:
        """The admission script for one request, carrying its tenant's queued releases
        (one script, one round trip), answered within `timeout` of the call, a wait
        for a connection being made included (else RoundTripFailed then; the store's
        answer, due within `timeout` of the script's send, is read on a thread of its
        own, and what it granted goes back). Raises RoundTripFailed like `run`."""
        now = time.monotonic()
        answer_by = now + self.settings.timeout
        if self._held and now >= self._retry_at:
            # Off a loop nothing else sends what a failed round trip held: the slots it
            # gives back go first (found by review: the tenant stayed refused).
            self.flush()
        call, releases, refund = self._command(gate, lease_id, pending)

        def late(replies: list[Any]) -> None:
            if self._abandon_reply(gate, lease_id, replies[0]):
                self.flush()

        # What the call carries is not lost with it, as in `_send` (found by review: a
        # refused admission dropped its tenant's releases).
        try:
            reply = self._pipeline([call], answer_by - time.monotonic(), answer_by, late)[0]
        except _NotSent:
            self._hold(self._carried(gate, releases, refund))
            raise
        except RoundTripFailed:
            self._hold_unanswered([_Queued(call, releases)])  # sent, no answer read
            raise
        if isinstance(reply, Exception) or not _well_formed(reply):
            self._script_failed(_malformed(reply))
        return reply

    async def admit_async(self, gate: RedisGate, lease_id: str, pending: int,
                          since: float, grant: Grant | None = None) -> Any:
        """`admit` for one admission, or for `grant` (as many as the gate `wanted` when
        its call is built), of a request made at `since` (monotonic), answered within
        `timeout` from then (else RoundTripFailed then, see the module docstring);
        batched: every admission queued in this turn of the event loop goes in one
        pipeline, sent once the turn's ready work has run, or with the pipeline still
        waiting for the state thread. Raises RoundTripFailed like `run`."""
        loop = self._loop = asyncio.get_running_loop()
        asked = _Asked(gate, lease_id, pending, grant, loop.create_future(),
                       since + self.settings.timeout)
        if grant is not None:
            grant.request = asked
        self._admissions.append(asked)
        if len(self._admissions) == 1:
            loop.call_soon(self._send_admissions)
        expiry = loop.call_later(since + self.settings.timeout - time.monotonic(),
                                 self._give_up, asked)
        future = asked.future
        try:
            return await future
        except asyncio.CancelledError:
            asked.gave_up = True
            if future.done() and not future.cancelled() and future.exception() is None \
                    and self._abandon(asked, future.result()):
                # Answered, then cancelled in the same turn, before this resumed: what
                # the store granted goes back (it stayed taken for the lease's time).
                self._flush_soon()
            raise
        finally:
            expiry.cancel()

    def join(self, gate: RedisGate, grant: Grant) -> asyncio.Future[Lease | None] | None:
        """A share of `grant` (of `gate`) for one more request, which the grant then
        counts (its call, when built, built again: it is answered a slot or a refusal,
        see `scripts.ADMIT`); None once the grant is sent, or counts all it may."""
        with self._batch_lock:  # the state thread takes the calls under it
            if grant.sent or len(grant.waiting) + 1 >= MAX_GRANT:
                return None
            share: asyncio.Future[Lease | None] = asyncio.get_running_loop().create_future()
            grant.waiting.append(share)
            asked = grant.request
            if asked is not None and asked.call is not None:
                gate.recount(grant, 1 + len(grant.waiting))
                asked.call = gate.command(asked.lease_id, asked.pending, grant.asked,
                                          asked.releases, asked.refund, grant)
            return share

    def _give_up(self, asked: _Asked) -> None:
        """`asked`'s time is over: `on_unavailable` now, whatever its round trip does."""
        if asked.future.done():
            return
        asked.gave_up = True
        timeout = self.settings.timeout
        now = time.monotonic()
        if now - self._logged_late >= _LOG_INTERVAL:  # not an outage: no other line says it
            self._logged_late = now
            logger.warning("shared state %s: a request had no answer within %g s of asking "
                           "(time waiting for other round trips included): %s", self.where,
                           timeout, self.settings.on_unavailable)
        asked.future.set_exception(RoundTripFailed(
            f"shared state {self.where}: no answer within {timeout:g} s"))

    def _abandon(self, asked: _Asked, reply: Any) -> bool:
        """What the store granted `asked` (its `reply`) after it gave up is queued to go
        back with the next flush, which the caller sees to, not when its leases expire
        (a client dropping requests held the slots); whether there was any."""
        return self._abandon_reply(asked.gate, asked.lease_id, reply)

    def _abandon_reply(self, gate: RedisGate, lease_id: str, reply: Any) -> bool:
        """`_abandon` of `gate`'s admission `lease_id`. Thread-safe: the gate's part
        reads only what never changes."""
        if isinstance(reply, list) and _well_formed(reply) and reply[0] == "ok":
            gate.abandon(lease_id, reply)
            return True
        return False

    def _send_admissions(self) -> None:
        # On the loop: the round trip runs on the state's thread, so a slow store never
        # stalls the loop (other requests, other responses) while it answers.
        waiting, self._admissions = self._admissions, []
        for asked in waiting:
            if not asked.future.done():  # one cancelled already asks nothing
                asked.call, asked.releases, asked.refund = self._command(
                    asked.gate, asked.lease_id, asked.pending, asked.grant)
        with self._batch_lock:
            batch = self._batch
            if batch is not None:
                # The state thread is busy: these ride with the pipeline waiting for it,
                # not in one more behind it (a slow store's queue stays one pipeline).
                batch.asked += waiting
                return
            batch = self._batch = _Batch(waiting)
        try:
            sent = self._executor.submit(self._send, batch)
        except RuntimeError:  # closed: nothing more goes to the store
            with self._batch_lock:
                self._batch = None
            for asked in waiting:
                if not asked.future.done():
                    asked.future.set_exception(
                        RoundTripFailed(f"shared state {self.where} is closed"))
            return
        asyncio.wrap_future(sent).add_done_callback(
            lambda done: self._answer(batch.asked, done))

    def _send(self, batch: _Batch) -> list[tuple[_Asked, Any]]:
        """On the state thread: `batch`, taken as it is now (nothing joins it after),
        after every release and refund queued (they give slots back before the
        admissions decide, in the same round trip); each admission sent with its reply.
        Of a request that gave up meanwhile only the releases and refund are sent: they
        are not admissions, and were lost with it (a gate of one slot then refused
        everyone for the lease's time). The wait for a connection being made lasts
        until the last admission's deadline (the store's own time, `timeout`, starts
        when the pipeline is sent)."""
        with self._batch_lock:
            if self._batch is batch:
                self._batch = None
            for asked in batch.asked:
                if asked.grant is not None:
                    asked.grant.sent = True  # nobody joins it now (`join`)
        queued = self._take_queued()
        owners: list[_Asked | None] = [None] * len(queued)  # whose answer each reply is
        latest = 0.0
        for asked in batch.asked:
            if asked.call is None:
                continue
            if not asked.gave_up:
                queued.append(_Queued(asked.call, asked.releases))
                owners.append(asked)
                latest = max(latest, asked.deadline)
                continue
            carried = self._carried(asked.gate, asked.releases, asked.refund)
            queued += carried
            owners += [None] * len(carried)
        if not queued:
            return []
        calls = [call for call, _ in queued]
        answered: list[tuple[_Asked, Any]] = []
        late = False
        wait = max(0.0, latest - time.monotonic()) if latest else None
        try:
            replies = self._pipeline(calls, wait)
        except _NotSent:
            # What the admissions carry is not lost with them (nor with the store
            # marked down): the next round trip sends it.
            held = [each for owner, each in zip(owners, queued, strict=True)
                    if owner is None]
            for owner in owners:
                if owner is not None:
                    held += self._carried(owner.gate, owner.releases, owner.refund)
            self._hold(held)
            raise
        except _PartlyAnswered as failed:
            # The replies read before the round trip failed are acted on: a grant goes
            # back (dropped with the rest, a slot read as granted stayed taken for the
            # lease's time, its request refused 503, found by review).
            self._dropped([reply for owner, reply in zip(owners, failed.replies,
                                                         strict=True) if owner is None])
            self._hold_unanswered(queued, failed.replies)
            if any([self._abandon(owner, reply) for owner, reply
                    in zip(owners, failed.replies, strict=True) if owner is not None]):
                self._flush_next()
            raise
        except RoundTripFailed:
            self._hold_unanswered(queued)  # sent, no answer read
            raise
        self._dropped([reply for owner, reply in zip(owners, replies, strict=True)
                       if owner is None])
        for owner, reply in zip(owners, replies, strict=True):
            if owner is None:
                continue
            if owner.gave_up:
                # Given back from here, with the next round trip (from the loop, it
                # came one turn later: one more round trip, on a thread a slow store
                # keeps busy).
                late = self._abandon(owner, reply) or late
            else:
                answered.append((owner, reply))
        if late:
            self._flush_next()
        return answered

    def _answer(self, asked: list[_Asked], done: asyncio.Future[Any]) -> None:
        exc = done.exception()
        if exc is not None:
            if not isinstance(exc, RoundTripFailed):
                logger.error("shared state %s: admissions failed: %r", self.where, exc)
            for each in asked:
                if not each.future.done():
                    each.future.set_exception(RoundTripFailed(str(exc)))
            return
        late = False
        for each, reply in done.result():
            future = each.future
            if future.done():  # gave up or cancelled as its answer came
                late = self._abandon(each, reply) or late
                continue
            if isinstance(reply, Exception) or not _well_formed(reply):
                try:
                    self._script_failed(_malformed(reply))
                except RoundTripFailed as failed:
                    future.set_exception(failed)
            else:
                future.set_result(reply)
        if late:
            self._flush_soon()

    def _pipeline(self, calls: Sequence[bytes], wait: float | None = None,
                  answer_by: float | None = None,
                  late: Callable[[list[Any]], None] | None = None,
                  sources: Sequence[str] = (RELEASE, ADMIT, REFUND),
                  even_if_down: bool = False) -> list[Any]:
        """`calls` (encoded commands, see `resp`: script calls of `sources`) sent in one
        round trip, within `timeout` from when they are sent, after a wait of `wait`
        seconds at most for a connection being made (see `_round_trip`, also for
        `even_if_down`); the replies (errors as values). Raises RoundTripFailed when
        Redis is down or takes longer, or the connection is not made yet, or at
        `answer_by` (monotonic) when it comes first: the replies are then read on a
        thread of their own and given to `late`."""
        replies: list[Any] = [None] * len(calls)
        sent = list(range(len(calls)))  # the calls of the last send, by index
        read: list[Any] = []  # replies to them read so far
        try:
            self._exchange(calls, replies, sent, read, wait, answer_by, late, sources,
                           even_if_down)
        except _NotSent:
            raise
        except RoundTripFailed as exc:
            if late is not None:
                raise  # what was read is given to `late` when it is answered late
            known = list(replies)
            for index in sent[len(read):]:
                known[index] = None  # sent, not answered: it may have run, or not
            if any(reply is not None for reply in known):
                raise _PartlyAnswered(str(exc), known) from None
            raise
        return replies

    def _exchange(self, calls: Sequence[bytes], replies: list[Any], sent: list[int],
                  read: list[Any], wait: float | None, answer_by: float | None,
                  late: Callable[[list[Any]], None] | None, sources: Sequence[str],
                  even_if_down: bool) -> None:
        """`_pipeline`'s round trip: each reply read is put in `replies` as it comes;
        `sent` and `read` end as the calls of the last send and their replies read."""
        pool = self.client.connection_pool
        sending = False  # set as the first request goes: nothing was sent before
        retry_at = self._retry_at  # changed by this round trip when it marks the store down
        try:
            with self._round_trip(wait, answer_by, even_if_down):
                connection: Any = pool.get_connection()
                loads: list[bytes] = []
                owed = 0  # replies to what was sent, not read yet
                try:
                    for attempt in range(2):
                        read.clear()
                        owed = len(loads) + len(sent)
                        sending = True
                        connection.send_packed_command(
                            [b"".join((*loads, *(calls[index] for index in sent)))])
                        for _ in loads:  # shas known already; a failed load is NOSCRIPT below
                            _reply(connection)
                            owed -= 1
                        for index in sent:
                            replies[index] = _reply(connection)
                            read.append(replies[index])
                            owed -= 1
                        # NOSCRIPT: that call did not run. Only those are sent again: a
                        # flush landing mid-pipeline (read in chunks) left the calls before
                        # it run, and sending them all again ran those twice (refunds given
                        # back twice, CPU charged twice; found by review).
                        unknown = [index for index in sent
                                   if isinstance(replies[index], redis.exceptions.NoScriptError)]
                        if attempt or not unknown or time.monotonic() < self._reload_after:
                            if attempt and unknown:
                                # Loading them did not help: not again for RETRY_INTERVAL (a
                                # store answering NOSCRIPT every time had each admission wait
                                # for three loads, found by review).
                                self._reload_after = time.monotonic() + RETRY_INTERVAL
                            break
                        # Restarted, or flushed: loaded ahead of the calls again, on this
                        # connection and in one send (on another, each load waited for a
                        # handshake of its own; found by review).
                        loads = [script_load(source) for source in sources]
                        sent[:] = unknown
                except redis.TimeoutError:
                    if late is None or not answer_late():
                        connection.disconnect()  # replies may be left unread on it
                        raise
                    # The caller's time is over, not the store's: the connection is kept
                    # (dropped, a store slower than what a fresh one's handshake left of
                    # the caller's time would never be used) and its replies read later.
                    resent, answered = list(sent), late

                    def merged(rest: list[Any]) -> None:
                        for index, reply in zip(resent, rest, strict=True):
                            replies[index] = reply
                        answered(replies)

                    try:
                        self._read_later(connection, owed, read, len(sent), merged)
                    except BaseException:  # no thread: its replies would be the next call's
                        connection.disconnect()
                        raise
                    connection = None
                    raise AnswerLate(f"no answer within {self.settings.timeout:g} s of "
                                     "asking (a wait for a connection included)") from None
                except BaseException:
                    connection.disconnect()  # replies may be left unread on it
                    raise
                finally:
                    if connection is not None:
                        pool.release(connection)
        except _NotSent:
            raise
        except RoundTripFailed as exc:
            if sending:
                raise  # sent: it may have run
            # Nothing went out: what it carries may all go with the next round trip,
            # refunds too. A store that answered the connection's handshake with an error
            # (a `CLIENT` renamed, a missing database) is as unusable as one down, and
            # marked so: else each admission made a new connection (~170 a second under
            # load) and a held release was flushed ~350 times a second (found by review).
            if self._retry_at == retry_at:
                self._went_down(exc)
            raise _NotSent(str(exc)) from None

    def _dropped(self, replies: Sequence[Any]) -> None:
        """Say that releases or refunds answered `replies` with errors were lost (a
        store answering NOSCRIPT after the scripts were loaded again, a key of the wrong
        type): their slots come back only when their leases expire, their admissions
        not at all. One line per `_LOG_INTERVAL` at most, with the count since the
        last."""
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if not errors:
            return
        now = time.monotonic()
        with self._lock:
            self._drops += len(errors)
            if now - self._logged_drop < _LOG_INTERVAL:
                return
            self._logged_drop, count, self._drops = now, self._drops, 0
        cause = errors[0]
        what = "NOSCRIPT after loading the scripts again" if isinstance(
            cause, redis.exceptions.NoScriptError) else str(cause)
        logger.warning("shared state %s: %d release%s or refund%s dropped (%s): their "
                       "slots come back when their leases expire, their admissions are "
                       "not given back", self.where, count, "" if count == 1 else "s",
                       "" if count == 1 else "s", what)

    def _read_later(self, connection: Any, owed: int, read: list[Any], calls: int,
                    late: Callable[[list[Any]], None]) -> None:
        """On a thread of its own: the `owed` replies on `connection` read within what is
        left of this round trip's store time, then the replies to the round trip's
        `calls` (those `read` already first) given to `late`, and the connection back
        to its pool; a store that does not answer in its time is marked down."""
        at = store_deadline()

        def finish() -> None:
            pool = self.client.connection_pool
            try:
                with continued(at, self.settings.timeout):
                    rest = [_reply(connection) for _ in range(owed)]
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                connection.disconnect()
                if not self._closed:  # closing cuts the read short, the store is not down
                    self._went_down(exc)
                return
            except BaseException:  # noqa: BLE001 - a reply it cannot read: nothing owed
                connection.disconnect()
                return
            finally:
                pool.release(connection)
            try:
                late((read + rest)[-calls:])
            except Exception:  # noqa: BLE001 - a thread of its own: nobody to raise to
                logger.exception("shared state %s: a late answer could not be used",
                                 self.where)

        threading.Thread(target=finish, daemon=True, name="stockade-state-late").start()

    def free_probe(self, gate: RedisGate, probe_at: str) -> None:
        """Free the half-open probe Redis let through for an admission nobody waits for
        any more (stored as `probe_at`), off the event loop; a lost round trip leaves it
        to `probe_timeout`."""
        try:
            self._executor.submit(self._free_probe, gate.keys.breaker, probe_at)
        except RuntimeError:
            pass  # closed

    def _free_probe(self, breaker: str, probe_at: str) -> None:
        try:
            self.run(self.unused_script, [breaker], [probe_at], keep=True)
        except RoundTripFailed:
            pass  # logged by `run`

    def flush(self) -> None:
        """Send the releases no admission carried, one script per tenant (one answered
        with an error just expires; one not sent, or sent with no answer read, waits
        for the next round trip, see `_hold`, `_hold_unanswered`)."""
        with self._release_lock:
            self._flush_queued = False  # what is queued from now on needs another
        queued = self._take_queued()
        if queued:
            try:
                self._dropped(self._pipeline([call for call, _ in queued]))
            except _NotSent:
                self._hold(queued)
            except _PartlyAnswered as failed:
                self._dropped(failed.replies)
                self._hold_unanswered(queued, failed.replies)
            except RoundTripFailed:
                self._hold_unanswered(queued)  # sent, no answer read

    # -- breakers: what admissions saw, for `RedisBreakers.check` -------------------------

    def probe_taken(self, ident: tuple[str, str], denied: int, at: str) -> None:
        """An admission let the half-open probe through (this process runs it); `at` is
        Redis's time of it, as the script stored it."""
        now = float(at)
        with self._lock:
            self._probes.grant(ident, at)
            self._open.pop(ident, None)
        breakers = self._breakers
        if breakers is not None:
            breakers.notify(Transition(ident[0], ident[1] or None, "open", "half_open", now,
                                       0, None, "cooldown over: one probe run let through",
                                       denied))

    def saw_open(self, ident: tuple[str, str], until: float | None, now: float) -> None:
        """An admission found the breaker open until `until` (Redis time `now`)."""
        with self._lock:
            if until is not None:
                self._open[ident] = time.monotonic() + min(until - now, REFUSAL_CACHE)

    def breaker_message(self, function: str, state: str, at: float, count: int) -> str:
        """Why a breaker refuses, as `Breaker` says it."""
        if state == "open":
            return (f"function {function} is refused until {iso_time(at)}: its circuit "
                    f"breaker opened after {count} violations (`stockade breaker reset "
                    f"function:{function}` closes it)")
        return (f"function {function} is refused: its circuit breaker lets one probe run "
                f"through and that run is still going (since {iso_time(at)})")

    def breakers(self, config: BreakerConfig,
                 on_transition: OnTransition | None) -> RedisBreakers:
        self.probe_timeout = config.probe_timeout
        self.cooldown = config.cooldown
        self._breakers = RedisBreakers(self, config, on_transition)
        return self._breakers

    # -- StateBackend ------------------------------------------------------------------

    def gate(self, spec: GateSpec) -> RedisGate:
        return RedisGate(spec, self, self.fallback.gate(spec))

    def update(self, quotas: Mapping[str, Quota]) -> None:
        self.fallback.update(quotas)  # Redis gets each gate's quotas with every call

    def retain(self, keys: Collection[str]) -> None:
        self.fallback.retain(keys)  # its cells are this worker's, as without Redis

    def descriptors(self, keys: Collection[str]) -> int:
        return self.fallback.descriptors(keys)

    def ping(self) -> bool:
        """Whether Redis answers now, within `timeout` of the call (a wait for a
        connection being made included, as for `run`; asked even while marked down).
        A store that fails is marked down and logged; one still connecting, or
        answering after the caller's time, is not."""
        answer_by = time.monotonic() + self.settings.timeout
        try:
            reply = self._pipeline([_PING], self.settings.timeout, answer_by,
                                   lambda replies: None, (), even_if_down=True)[0]
        except RoundTripFailed:
            return False
        return bool(reply == "PONG")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)  # what was submitted is sent first
        for gate in list(self.holding):
            if gate._credit is not None:
                gate.settle(gate._credit)
        self.flush()
        # Breaker records waiting for a connection are sent before the client goes (a
        # violation was lost so), each within its bound; those still waiting are lost.
        with self._lock:
            sending = list(self._sending.items())
        for thread, deadline in sending:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._client_closed = True
            left = len(self._sending)
            self._sending.clear()  # said here, not again by their threads
        if left:
            self._lost_at_close(left)
        self.client.close()
        self.fallback.close()


class RedisBreakers:
    """The `BreakerStore` of a `RedisState`: admissions already asked Redis (in the same
    script as the quotas), so `check` answers from what they saw; `record` runs a script
    only for a violation, or for the end of this process's probe. A probe an admission
    granted is held by the run `probe_held` names: only that run's end closes or re-opens
    the breaker, and only while Redis still holds that probe (its `probe_at`)."""

    def __init__(self, state: RedisState, config: BreakerConfig,
                 on_transition: OnTransition | None) -> None:
        self.state = state
        self.config = config
        self._on_transition = on_transition
        self._ids = itertools.count()

    def notify(self, transition: Transition | None) -> None:
        """Pass `transition` on (the audit log)."""
        if transition is not None and self._on_transition is not None:
            self._on_transition(transition)

    def check(self, key: str, tenant: str | None = None,
              now: float | None = None, holder: str | None = None) -> Decision:
        ident = (key, tenant or "")
        until = self.state._open.get(ident)
        if until is not None and time.monotonic() < until:
            return Decision(False, "open", f"{key.replace(':', ' ', 1)} is refused: its "
                            "circuit breaker is open")
        return Decision(True, "closed")

    def _keys(self, key: str, tenant: str | None) -> list[str]:
        keys = TenantKeys.of(tenant or "", "-", key, self.state.prefix)
        return [keys.breaker, keys.violations]

    @property
    def holds_probe(self) -> bool:
        return bool(self.state._probes)

    def record(self, key: str, tenant: str | None, violated: bool,
               now: float | None = None, holder: str | None = None,
               source: str | None = None) -> Transition | None:
        ident = (key, tenant or "")
        state = self.state
        with state._lock:
            # This run's probe, as Redis stored it; "" for any other run.
            probe_at = state._probes.take(ident, holder) or ""
        if not violated and not probe_at:
            return None

        def late(reply: Any) -> None:
            # Answered after the caller's time: what it changed is told all the same.
            try:
                self.notify(self._transition(key, tenant, reply))
            except RoundTripFailed:
                pass  # logged by `_script_failed`

        try:
            if violated:
                cfg = self.config
                reply = state.run(state.violation_script, self._keys(key, tenant), [
                    str(cfg.threshold), repr(cfg.window), repr(cfg.cooldown),
                    # A client's violation replaces its last one: it counts once.
                    _member(source) if source is not None
                    else f"{state.lease_id()}:{next(self._ids)}", key, tenant or "", probe_at,
                    repr(cfg.remembered)], late, keep=True)
            else:
                reply = state.run(state.probe_script, self._keys(key, tenant), [probe_at],
                                  late, keep=True)
            transition = self._transition(key, tenant, reply)
        except RoundTripFailed:
            # Logged by `run`; lost with a store that failed, else told when it is
            # answered late (or sent once a connection being made is ready).
            return None
        self.notify(transition)
        return transition

    def _transition(self, key: str, tenant: str | None, reply: Any) -> Transition | None:
        """The transition a breaker script answered (`scripts.VIOLATION`, `PROBE_CLEAN`).
        Raises RoundTripFailed for a reply of another shape: a store answering so raised
        IndexError or ValueError into the run's end (found by review)."""
        try:
            if reply[0] == "open":
                # What it was before: a stray write may have stored anything.
                old = reply[1] if reply[1] in ("closed", "half_open") else "closed"
                count, until, at = int(number(reply[2])), number(reply[3]), number(reply[5])
                reason = ("probe run violated a limit or failed" if old == "half_open"
                          else f"{count} violations within {self.config.window:g} s")
                return Transition(key, tenant, old, "open", at, count, until, reason,
                                  int(number(reply[4])))
            if reply[0] == "closed":
                return Transition(key, tenant, "half_open", "closed", number(reply[2]), 0,
                                  None, "probe run ended without a violation",
                                  int(number(reply[1])))
            return None
        except (IndexError, KeyError, TypeError, ValueError):
            self.state._script_failed(_malformed(reply))

    def counted(self, key: str, tenant: str | None, source: str) -> bool:
        """Whether `source`'s violation is remembered (`BreakerConfig.remembered`;
        False when the store cannot be asked: the probe then runs, and its violation
        decides)."""
        state = self.state
        try:
            return bool(state.run(state.counted_script, self._keys(key, tenant)[1:],
                                  [_member(source), repr(self.config.remembered)]))
        except RoundTripFailed:
            return False  # logged by `run`

    def probe_failed(self, key: str, tenant: str | None, now: float | None = None,
                     holder: str | None = None) -> Transition | None:
        if self.state._probes.held_by((key, tenant or ""), holder) is None:
            return None
        return self.record(key, tenant, True, now, holder)

    def probe_held(self, key: str, tenant: str | None, holder: str | None) -> None:
        """The probe an admission granted this process under `key` is held by `holder`'s
        run (the gateway names it once the request's invocation exists)."""
        state = self.state
        ident = (key, tenant or "")
        with state._lock:
            state._probes.bind(ident, holder)

    def probe_unused(self, key: str, tenant: str | None, holder: str | None = None) -> None:
        """The probe `holder`'s run held under `key` never ran: freed in Redis
        (`PROBE_UNUSED`) for the next admission on any replica; a lost round trip leaves
        it to `probe_timeout`."""
        state = self.state
        ident = (key, tenant or "")
        with state._lock:
            probe_at = state._probes.take(ident, holder)
        if probe_at is None:
            return
        try:
            state.run(state.unused_script, self._keys(key, tenant)[:1], [probe_at],
                      keep=True)
        except RoundTripFailed:
            pass  # logged by `run`

    def entries(self, now: float | None = None) -> list[BreakerEntry]:
        return breaker_entries(self.state.client, self.config.window, self.state.prefix)

    def reset(self, key: str = "", tenant: str | None = None) -> list[BreakerEntry]:
        return reset_breakers(self.state.client, self.config.window, key, tenant,
                              self.state.prefix)

    def close(self) -> None:
        """Nothing to flush: every count went to Redis when it happened."""


def _reply(connection: Any) -> Any:
    """The next reply on `connection`, an error reply as a value. A read cut short
    leaves the connection as it was (redis-py reads the reply again from its start)."""
    try:
        return connection.read_response(disconnect_on_error=False)
    except redis.ResponseError as error:
        return error


def _member(source: str) -> str:
    """A client's member in a breaker's violations (its next one replaces it)."""
    return f"client {source}"


class _Answer(NamedTuple):
    """One kind of admission answer (`scripts.ADMIT`): the words its second field may be
    and which of its fields are numbers (`resp.number`); it has as many fields as its
    last number says."""

    words: tuple[str, ...]
    numbers: tuple[int, ...]


_ANSWERS = {"ok": _Answer(("0", "1"), (2, 3, 4, 5, 8)),
            "breaker": _Answer(("open", "half_open"), (2, 3, 4)),
            "concurrency": _Answer(("function", "tenant"), (2,)),
            "cpu": _Answer(("function", "tenant"), (2,)),
            "rate": _Answer(("function", "tenant"), (2,))}
_COUNTS = (2, 4, 5)  # an `ok` answer's counts: read with int()
# An `ok` answer's refusal of the waiting requests beyond those granted (kind, scope).
_CUTS = {("none", "-"), ("concurrency", "function"), ("concurrency", "tenant"),
         ("rate", "function"), ("rate", "tenant"), ("breaker", "half_open")}
_COUNT_DIGITS = 12  # int() of 5,000 digits raised ValueError past `_well_formed`


def _well_formed(reply: Any) -> bool:
    """Whether `reply` is an admission script's answer: its shape, its second field one
    of its words, its numbers finite and in range. A store answering otherwise (`*-1`,
    an integer, fields missing) raised IndexError into every request, a 500 whatever
    `on_unavailable` said; a time of `inf`, OverflowError (found by review)."""
    answer = _ANSWERS.get(reply[0]) if isinstance(reply, list) and reply \
        and isinstance(reply[0], str) else None
    if answer is None or len(reply) <= answer.numbers[-1] \
            or not all(isinstance(field, str) for field in reply) \
            or reply[1] not in answer.words:
        return False
    try:
        for index in answer.numbers:
            number(reply[index])
    except ValueError:
        return False
    return reply[0] != "ok" or (reply[6], reply[7]) in _CUTS and all(
        reply[index].isascii() and reply[index].isdigit()
        and len(reply[index]) <= _COUNT_DIGITS for index in _COUNTS)


def _malformed(reply: Any) -> BaseException:
    """The error a reply stands for: its own, or one naming its shape."""
    if isinstance(reply, BaseException):
        return reply
    return redis.ResponseError(f"a script answered {str(reply)[:80]!r}")
