"""`RedisState`: quotas and circuit breakers shared by every replica through one Redis.

One admission is one round trip: a Lua script (`scripts.ADMIT`, by EVALSHA) checks the
function's breaker and the function's and tenant's concurrency, CPU and rate (GCRA)
with Redis's clock, and takes the slots. Concurrency slots are leases: members of a
sorted set scored by their expiry (the function's timeout plus a grace), so a replica
that dies holding slots gives them back once they expire. Releases (slots to give
back, CPU to charge) are not waited for: the next admission of the same tenant carries
them as extra arguments of its own script, which gives them back before deciding (a
slot given back counts for it), so a request is one script in one round trip. The
releases no admission took within `RELEASE_DELAY` (`credit.HOLD` while this replica
spends credits) are sent by a timer on the event loop, one script per tenant (at
once, off a loop). Only a release of the admission's
own tenant rides with it: its keys share the tenant's hash tag, so one script still
touches one Redis Cluster slot. On an event loop the round trips run on one thread of
the state's own, in order. A slot may stay taken that much after its response (never
less: the limit holds).

What is decided here, and why the limits hold: a refusal for rate or CPU is cached until
the moment the script said a retry can succeed (other replicas can only push that
moment later), and an open breaker, each for at most `REFUSAL_CACHE` seconds (a breaker
reset by hand is seen within that). On an event loop, a gate that takes two or more
admissions per `credit.HOLD` window asks Redis for a few at once while its tenant is
far from its limits, and spends them here for `credit.HOLD` seconds (see `credit`:
Redis counted them all when it granted them; what is not spent goes back). A gate
whose function and tenant have no quota and no breaker asks Redis nothing.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import redis

from ..telemetry.breaker import BreakerEntry, Decision, Transition, iso_time
from .base import Gate, GateSpec, Lease, OnTransition, StateBackend
from .breakers import breaker_entries, reset_breakers
from .client import connect
from .credit import HOLD, MAX_GRANT, Credit, Demand, hold_for
from .errors import BreakerOpen, QuotaExceeded, StateUnavailable
from .keys import PREFIX, TenantKeys
from .local import LocalGate, LocalState
from .quota import Quota
from .resp import Releases, bulk, bulks, evalsha
from .scripts import ADMIT, PROBE_CLEAN, REFUND, RELEASE, UNLIMITED, VIOLATION
from .settings import StateSettings

if TYPE_CHECKING:
    from ..telemetry.breaker import BreakerConfig

__all__ = ["RedisState", "RedisGate", "RedisBreakers", "REFUSAL_CACHE", "RETRY_INTERVAL"]

logger = logging.getLogger("stockade.state")
REFUSAL_CACHE = 0.1  # seconds a refusal (rate, CPU, open breaker) is answered locally
RETRY_INTERVAL = 1.0  # seconds between attempts while Redis is unreachable
RELEASE_DELAY = 0.002  # seconds a release waits for an admission to carry it
_LOG_INTERVAL = 10.0  # seconds between log lines about failing scripts


_MAX_WAITS = 3  # grants a request waits for before it asks Redis alone
_Waiting = tuple["RedisGate", str, int, int, "asyncio.Future[Any]"]


class _Unavailable(Exception):
    """Redis did not answer usefully; the message says why."""


def _number(value: float | int | None) -> str:
    return str(UNLIMITED) if value is None else repr(float(value))


class _RedisLease:
    """Slots held in Redis under `lease_id` (of `credit`, when it came from a grant);
    released at most once."""

    __slots__ = ("_gate", "_id", "_credit", "degraded")

    def __init__(self, gate: RedisGate, lease_id: str, credit: Credit | None = None) -> None:
        self._gate: RedisGate | None = gate
        self._id = lease_id
        self._credit = credit
        self.degraded = False
        gate._inflight += 1
        if gate._inflight > gate._peak:
            gate._peak = gate._inflight

    def release(self, cpu_seconds: float = 0.0) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._inflight -= 1
            credit = self._credit
            if credit is None or not credit.give_back(self._id, cpu_seconds):
                gate.release(self._id, cpu_seconds)


class _FreeLease:
    """The admission of a gate with nothing to count: no quota, no breaker."""

    __slots__ = ()
    degraded = False

    def release(self, cpu_seconds: float = 0.0) -> None:
        """Nothing was taken."""


_FREE = _FreeLease()


class RedisGate(Gate):
    """One function's admission through Redis, with `fallback` for `fail_open`."""

    def __init__(self, spec: GateSpec, state: RedisState, fallback: LocalGate) -> None:
        super().__init__(spec)
        self.state = state
        self.fallback = fallback
        self.keys = TenantKeys.of(spec.tenant, spec.function, spec.breaker or "-", state.prefix)
        self.ident = (spec.breaker or "", spec.tenant)
        fq, tq = spec.function_quota, spec.tenant_quota
        self._concurrent = fq.concurrency is not None or tq.concurrency is not None
        self._cpu = _number(tq.cpu_per_minute)
        # The admission's KEYS[1..5] and ARGV[2..11], encoded once (see `resp`).
        self._keys = bulks(self.keys[:5])
        self._args = bulks([
            _number(spec.lease_seconds),
            _number(fq.concurrency), _number(fq.rate), _number(fq.bucket),
            _number(tq.concurrency), _number(tq.rate), _number(tq.bucket), self._cpu,
            "1" if spec.breaker else "0", _number(state.probe_timeout)])
        self._function_leases = bulk(self.keys.function_leases)
        self._cpu_limit = bulk(self._cpu)
        self._refund = (bulks(self.keys[:2]), bulks([_number(fq.rate), _number(tq.rate)]))
        self._refused: tuple[float, Exception] | None = None  # (monotonic until, refusal)
        self._pending_denials = 0
        # Nothing to count or check: no round trip at all.
        self.free = fq.unlimited and tq.unlimited and not spec.breaker
        self._hold = hold_for(spec.breaker is not None)
        self._demand = Demand(self._hold)
        self._credit: Credit | None = None
        self._granting: asyncio.Future[None] | None = None  # a grant on its way
        self._waiting = 0  # requests waiting on it
        self._asked = 0  # admissions it asked for
        self._inflight = 0  # its admissions not released yet, here
        self._peak = 0  # the most at once since its last grant
        self._short = False  # whether the last grant gave fewer (the tenant nears a limit)
        self._refund_due = 0  # unspent admissions of a settled credit, not yet sent

    def _prepare(self) -> tuple[str, int]:
        """A new lease id and the refusals to report, or the refusal cached for this
        moment raised."""
        refused = self._refused
        if refused is not None:
            if time.monotonic() < refused[0]:
                if isinstance(refused[1], BreakerOpen):
                    self._pending_denials += 1
                raise refused[1]
            self._refused = None
        pending, self._pending_denials = self._pending_denials, 0
        return self.state.lease_id(), pending

    def command(self, lease_id: str, pending: int, want: int,
                releases: Releases | None) -> bytes:
        """The admission script's call for `want` admissions, carrying `releases` (of
        this tenant) and the refund of this gate's last credit."""
        refund, self._refund_due = self._refund_due, 0
        # Slots: about as many as run here at once (they are reused within a credit),
        # not one per admission: each is a sorted-set member to add and remove.
        slots = min(want, 2 * max(self._peak, self._inflight) + 2)
        self._peak = self._inflight
        tail = b"%s%s%s%s" % (bulk(str(pending)), bulk(str(want)), bulk(str(refund)),
                              bulk(str(slots)))
        if releases is None:
            return evalsha(self.state.admit_script.sha, 20, 5, self._keys, bulk(lease_id),
                           self._args, tail)
        count = releases.count
        return evalsha(self.state.admit_script.sha, 20 + 4 * count, 5 + count, self._keys,
                       *releases.keys, bulk(lease_id), self._args, tail, *releases.args)

    def refund(self, tokens: int) -> bytes:
        """The `REFUND` script's call giving back `tokens` unspent admissions."""
        keys, rates = self._refund
        return evalsha(self.state.refund_script.sha, 5, 2, keys, bulk(str(tokens)), rates)

    def admit(self) -> Lease:
        if self.free:
            return _FREE
        lease_id, pending = self._prepare()
        try:
            reply = self.state.admit(self, lease_id, pending)
        except _Unavailable as exc:
            self._pending_denials += pending
            return self.state.unavailable(self, str(exc))
        return self._decide(reply, lease_id, False)

    async def admit_async(self) -> Lease:
        """`admit`, from this gate's credit when it has one (no round trip), else sent
        in one pipeline with the admissions of other requests that reached this point
        in the same turn of the event loop, asking for a credit when the gate is busy
        (see `credit`)."""
        if self.free:
            return _FREE
        self._demand.add(time.monotonic())
        waits = 0
        while True:
            lease = self._take(time.monotonic())
            if lease is not None:
                return lease
            granting = self._granting
            if granting is None:
                want = 0  # this request asks for the grant: sized when sent (`wanted`)
                break
            if (waits and self._short) or waits == _MAX_WAITS:
                want = 1  # the limits cut the last grant short: each asks alone
                break
            self._waiting += 1  # a grant is on its way: wait for it
            await asyncio.shield(granting)
            waits += 1
        lease_id, pending = self._prepare()
        if not want:
            self._granting = granting = asyncio.get_running_loop().create_future()
            self._waiting = 0
        try:
            reply = await self.state.admit_async(self, lease_id, pending, want)
        except _Unavailable as exc:
            self._pending_denials += pending
            return self.state.unavailable(self, str(exc))
        finally:
            if not want and granting is not None:
                self._granting = None
                granting.set_result(None)
        return self._decide(reply, lease_id, True)

    def wanted(self) -> int:
        """Admissions to ask for now: what the gate's demand says, and at least one for
        each request waiting on this grant (remembered, see `_decide`)."""
        self._asked = max(self._demand.want(), min(MAX_GRANT, 1 + self._waiting))
        return self._asked

    def _take(self, now: float) -> Lease | None:
        """An admission from this gate's credit, or None (none, spent, or over)."""
        credit = self._credit
        if credit is None:
            return None
        lease_id = credit.take(now)
        if lease_id is None:
            # Over, spent or out of free slots: what it did not use goes back with the
            # admission about to be sent, before it.
            self.settle(credit, renewed=True)
            return None
        return _RedisLease(self, lease_id, credit)

    def settle(self, credit: Credit, renewed: bool = False) -> None:
        """End `credit`: its free slots go back to Redis and its runs' CPU is charged
        (with this tenant's next admission, or the next flush); its unspent admissions
        ride with this gate's next admission when it is `renewed` (one is on its way),
        else they are refunded with the next flush."""
        if self._credit is credit:
            self._credit = None
        tokens, free, cpu = credit.settle()
        state = self.state
        if self._credit is None:
            state.holding.discard(self)
        self._refund_due += tokens
        if not renewed and self._refund_due:
            tokens, self._refund_due = self._refund_due, 0
            state.queue_refund(self, tokens)
        charge = repr(cpu) if cpu > 0 and self._cpu != str(UNLIMITED) else "0"
        for lease_id in free:
            state.queue_release(self, lease_id, charge)
            charge = "0"
        if charge != "0":
            state.queue_release(self, "", charge)  # slots not counted: the charge alone

    def _credit_from(self, granted: int, slots: int, lease_id: str) -> Credit | None:
        """The credit of a grant of `granted` admissions and `slots` slots (the first of
        each is this request's, under `lease_id`), made this gate's own; None for a
        grant of one."""
        if granted <= 1:
            return None
        old = self._credit
        if old is not None:
            self.settle(old)
        ids = [f"{lease_id}.{i}" for i in range(1, slots)] if self._concurrent else None
        credit = self._credit = Credit(granted - 1, ids, time.monotonic() + self._hold)
        self.state.holding.add(self)
        # Spent for HOLD; settled by the next admission (one script for both) or, if
        # none comes within another HOLD, by this timer.
        asyncio.get_running_loop().call_later(2 * self._hold, self.settle, credit)
        return credit

    def _decide(self, reply: Sequence[str], lease_id: str, on_loop: bool) -> Lease:
        kind = reply[0]
        if kind == "ok":
            if reply[1] == "1":
                self.state.probe_taken(self.ident, int(reply[2]), float(reply[3]))
            credit = None
            if on_loop:
                granted = int(reply[4])
                if self._asked:
                    self._short, self._asked = granted < self._asked, 0
                credit = self._credit_from(granted, int(reply[5]), lease_id)
            return _RedisLease(self, lease_id, credit)
        spec = self.spec
        if kind == "breaker":
            until, now = float(reply[2]), float(reply[4])
            retry = max(1.0, until - now) if reply[1] == "open" else 1.0
            error: Exception = BreakerOpen(self.state.breaker_message(
                spec.function, reply[1], until, int(float(reply[3]))), retry)
            self.state.saw_open(self.ident, until if reply[1] == "open" else None, now)
            self._cache(error, min(retry, REFUSAL_CACHE))
            raise error
        if on_loop:  # a grant that came with this refusal still has some: not refused
            lease = self._take(time.monotonic())
            if lease is not None:
                return lease
        scope = reply[1]
        label = f"{scope} {spec.function if scope == 'function' else spec.tenant}"
        quota = spec.function_quota if scope == "function" else spec.tenant_quota
        wait = float(reply[2])
        if kind == "concurrency":
            raise QuotaExceeded(f"{label}: {quota.concurrency} concurrent invocations at most",
                                1.0, "concurrency")
        if kind == "cpu":
            error = QuotaExceeded(f"{label}: CPU budget of {quota.cpu_per_minute:g} s per "
                                  "minute spent", wait, "cpu")
        else:
            error = QuotaExceeded(f"{label}: more than {quota.rate:g} requests per second",
                                  wait, "rate")
        self._cache(error, wait)
        raise error

    def _cache(self, error: Exception, seconds: float) -> None:
        # Only refusals no other replica can lift sooner (see the module docstring).
        self._refused = (time.monotonic() + min(seconds, REFUSAL_CACHE), error)

    def release(self, lease_id: str, cpu_seconds: float) -> None:
        """Give back `lease_id`'s slots and charge CPU (nothing to send: no round trip)."""
        charge = cpu_seconds > 0 and self._cpu != str(UNLIMITED)
        if self._concurrent or charge:
            self.state.queue_release(self, lease_id, repr(cpu_seconds) if charge else "0")


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
        self._on_fallback = on_fallback
        self.client = connect(settings, env)
        self.admit_script = self.client.register_script(ADMIT)
        self.refund_script = self.client.register_script(REFUND)
        self.release_script = self.client.register_script(RELEASE)
        self.violation_script = self.client.register_script(VIOLATION)
        self.probe_script = self.client.register_script(PROBE_CLEAN)
        self._ids = itertools.count()
        self._id_prefix = f"{os.urandom(6).hex()}:"
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._decided_alone = 0
        self._logged_error = 0.0
        self._probes: set[tuple[str, str]] = set()
        self._open: dict[tuple[str, str], float] = {}  # ident -> monotonic until
        self._breakers: RedisBreakers | None = None
        self._closed = False
        self._releases: dict[str, Releases] = {}  # to send, by tenant quota key
        self._refunds: list[bytes] = []  # unspent admissions of credits, to send
        self.holding: set[RedisGate] = set()  # gates with a live credit
        self._release_lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._admissions: list[_Waiting] = []
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

    def run(self, script: Any, keys: list[str], args: list[str]) -> Any:
        """Run `script`; raises _Unavailable when Redis is down (then not tried again for
        `RETRY_INTERVAL` s) or the script failed."""
        with self._round_trip():
            reply = script(keys=keys, args=args)
        return reply

    @contextmanager
    def _round_trip(self) -> Iterator[None]:
        """One exchange with Redis: refused at once while it is marked down; a lost
        connection marks it down and raises _Unavailable; a failed script raises through
        `_script_failed`; a success after an outage says it came back."""
        if self._retry_at and time.monotonic() < self._retry_at:
            raise _Unavailable(f"shared state {self.where} is unreachable")
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._went_down(exc)
            raise _Unavailable(f"shared state {self.where} is unreachable") from None
        except redis.RedisError as exc:
            self._script_failed(exc)
        if self._retry_at:
            self._came_back()

    def _script_failed(self, exc: BaseException) -> NoReturn:
        """A Lua error, a key of the wrong type: this decision fails, the store is up."""
        now = time.monotonic()
        if now - self._logged_error >= _LOG_INTERVAL:
            self._logged_error = now
            logger.error("shared state %s: a script failed: %s", self.where, exc)
        raise _Unavailable(f"shared state {self.where} failed to decide") from None

    def _went_down(self, exc: BaseException) -> None:
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

    def queue_release(self, gate: RedisGate, lease_id: str, cpu_seconds: str) -> None:
        """Send this release of `gate`'s lease with the next admission of its tenant,
        or within `RELEASE_DELAY` (at once when called off an event loop)."""
        tenant = gate.keys.tenant_quota
        with self._release_lock:
            batch = self._releases.get(tenant)
            if batch is None:
                batch = self._releases[tenant] = Releases(tenant, gate.keys.tenant_leases)
            batch.add(gate._function_leases, lease_id, cpu_seconds, gate._cpu_limit)
        self._flush_soon()

    def queue_refund(self, gate: RedisGate, tokens: int) -> None:
        """Give `tokens` unspent admissions of `gate`'s credit back with the next flush."""
        with self._release_lock:
            self._refunds.append(gate.refund(tokens))
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Flush within `RELEASE_DELAY` on an event loop (within `credit.HOLD` while a
        gate spends a credit: its renewal, due by then, carries them), at once off one."""
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._timer = loop.call_later(HOLD if self.holding else RELEASE_DELAY,
                                      self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        if not self._closed and (self._releases or self._refunds):
            self._executor.submit(self.flush)

    def _command(self, gate: RedisGate, lease_id: str, pending: int, want: int) -> bytes:
        """`gate`'s admission, carrying the queued releases of its tenant (taken off
        the queue)."""
        releases = None
        if self._releases:
            with self._release_lock:
                releases = self._releases.pop(gate.keys.tenant_quota, None)
        return gate.command(lease_id, pending, want, releases)

    def admit(self, gate: RedisGate, lease_id: str, pending: int) -> Any:
        """The admission script for one request, carrying its tenant's queued releases
        (one script, one round trip). Raises _Unavailable like `run`."""
        reply = self._pipeline([self._command(gate, lease_id, pending, 1)])[0]
        if isinstance(reply, Exception):
            self._script_failed(reply)
        return reply

    async def admit_async(self, gate: RedisGate, lease_id: str, pending: int,
                          want: int) -> Any:
        """`admit` for up to `want` admissions (0: as many as the gate `wanted` when the
        pipeline is sent), batched: every admission queued in this
        turn of the event loop goes in one pipeline, sent once the turn's ready work
        has run. Raises _Unavailable like `run`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._admissions.append((gate, lease_id, pending, want, future))
        if len(self._admissions) == 1:
            loop.call_soon(self._send_admissions)
        return await future

    def _send_admissions(self) -> None:
        # On the loop: the round trip runs on the state's thread, so a slow store never
        # stalls the loop (other requests, other responses) while it answers.
        waiting, self._admissions = self._admissions, []
        calls = [self._command(gate, lease_id, pending, want or gate.wanted())
                 for gate, lease_id, pending, want, _ in waiting]
        try:
            sent = self._executor.submit(self._pipeline, calls)
        except RuntimeError:  # closed: nothing more goes to the store
            for *_, future in waiting:
                future.set_exception(_Unavailable(f"shared state {self.where} is closed"))
            return
        asyncio.wrap_future(sent).add_done_callback(
            lambda done: self._answer(waiting, done))

    def _answer(self, waiting: list[_Waiting], done: asyncio.Future[Any]) -> None:
        exc = done.exception()
        if exc is not None:
            if not isinstance(exc, _Unavailable):
                logger.error("shared state %s: admissions failed: %r", self.where, exc)
            for *_, future in waiting:
                if not future.done():
                    future.set_exception(_Unavailable(str(exc)))
            return
        for (*_, future), reply in zip(waiting, done.result(), strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                try:
                    self._script_failed(reply)
                except _Unavailable as failed:
                    future.set_exception(failed)
            else:
                future.set_result(reply)

    def _pipeline(self, calls: Sequence[bytes]) -> list[Any]:
        """`calls` (encoded script calls, see `resp`) sent in one round trip; the
        replies (errors as values). Raises _Unavailable when Redis is down."""
        pool = self.client.connection_pool
        with self._round_trip():
            connection: Any = pool.get_connection()
            try:
                for attempt in range(2):
                    connection.send_packed_command([b"".join(calls)])
                    replies: list[Any] = []
                    for _ in calls:
                        try:
                            replies.append(connection.read_response())
                        except redis.ResponseError as error:  # this call's, the rest follow
                            replies.append(error)
                    if attempt or not any(isinstance(r, redis.exceptions.NoScriptError)
                                          for r in replies):
                        break
                    for script in (self.release_script, self.admit_script,
                                   self.refund_script):  # restarted
                        self.client.script_load(script.script)
            except BaseException:
                connection.disconnect()  # replies may be left unread on it
                raise
            finally:
                pool.release(connection)
        return replies

    def flush(self) -> None:
        """Send the releases no admission carried, one script per tenant (a lost one
        just expires)."""
        with self._release_lock:
            batches, self._releases = self._releases, {}
            refunds, self._refunds = self._refunds, []
        if batches or refunds:
            try:
                self._pipeline([batch.release(self.release_script.sha)
                                for batch in batches.values()] + refunds)
            except _Unavailable:
                pass  # the leases expire by themselves, unspent admissions are lost

    # -- breakers: what admissions saw, for `RedisBreakers.check` -------------------------

    def probe_taken(self, ident: tuple[str, str], denied: int, now: float) -> None:
        """An admission let the half-open probe through (this process runs it)."""
        with self._lock:
            self._probes.add(ident)
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
        self._breakers = RedisBreakers(self, config, on_transition)
        return self._breakers

    # -- StateBackend ------------------------------------------------------------------

    def gate(self, spec: GateSpec) -> RedisGate:
        return RedisGate(spec, self, self.fallback.gate(spec))

    def update(self, quotas: Mapping[str, Quota]) -> None:
        self.fallback.update(quotas)  # Redis gets each gate's quotas with every call

    def ping(self) -> bool:
        """Whether Redis answers now (logged when it does not)."""
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError) as exc:
            self._went_down(exc)
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)  # what was submitted is sent first
        for gate in list(self.holding):
            if gate._credit is not None:
                gate.settle(gate._credit)
        self.flush()
        self.client.close()
        self.fallback.close()


class RedisBreakers:
    """The `BreakerStore` of a `RedisState`: admissions already asked Redis (in the same
    script as the quotas), so `check` answers from what they saw; `record` runs a script
    only for a violation, or for the end of this process's probe."""

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
              now: float | None = None) -> Decision:
        ident = (key, tenant or "")
        until = self.state._open.get(ident)
        if until is not None and time.monotonic() < until:
            return Decision(False, "open", f"{key.replace(':', ' ', 1)} is refused: its "
                            "circuit breaker is open")
        return Decision(True, "closed")

    def _keys(self, key: str, tenant: str | None) -> list[str]:
        keys = TenantKeys.of(tenant or "", "-", key, self.state.prefix)
        return [keys.breaker, keys.violations]

    def record(self, key: str, tenant: str | None, violated: bool,
               now: float | None = None) -> Transition | None:
        ident = (key, tenant or "")
        state = self.state
        with state._lock:
            probe = ident in state._probes
            state._probes.discard(ident)
        if not violated and not probe:
            return None
        try:
            if violated:
                cfg = self.config
                reply = state.run(state.violation_script, self._keys(key, tenant), [
                    str(cfg.threshold), repr(cfg.window), repr(cfg.cooldown),
                    f"{state.lease_id()}:{next(self._ids)}", key, tenant or ""])
            else:
                reply = state.run(state.probe_script, self._keys(key, tenant), [])
        except _Unavailable:
            return None  # logged by `run`; the count is lost, the store decides nothing
        transition = None
        if reply[0] == "open":
            old, count, until, at = reply[1], int(reply[2]), float(reply[3]), float(reply[5])
            reason = ("probe run violated a limit or failed" if old == "half_open"
                      else f"{count} violations within {self.config.window:g} s")
            transition = Transition(key, tenant, old, "open", at, count, until, reason,
                                    int(reply[4]))
        elif reply[0] == "closed":
            transition = Transition(key, tenant, "half_open", "closed", float(reply[2]), 0,
                                    None, "probe run ended without a violation",
                                    int(reply[1]))
        self.notify(transition)
        return transition

    def probe_failed(self, key: str, tenant: str | None,
                     now: float | None = None) -> Transition | None:
        if (key, tenant or "") not in self.state._probes:
            return None
        return self.record(key, tenant, True, now)

    def entries(self, now: float | None = None) -> list[BreakerEntry]:
        return breaker_entries(self.state.client, self.state.prefix)

    def reset(self, key: str = "", tenant: str | None = None) -> list[BreakerEntry]:
        return reset_breakers(self.state.client, key, tenant, self.state.prefix)

    def close(self) -> None:
        """Nothing to flush: every count went to Redis when it happened."""
