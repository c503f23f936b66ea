"""`RedisGate`: one function's admission through Redis (see `redisstate`), from a
credit of admissions granted ahead when it has one (`credit`), else by the admission
script in the next pipeline of its `RedisState`; and the leases it hands out.

A refusal for rate or CPU is cached until the moment the script said a retry can
succeed (other replicas can only push that moment later), and an open breaker, each
for at most `REFUSAL_CACHE` seconds (a breaker reset by hand is seen within that).

On an event loop, a request that finds its gate's credit spent while a grant is on its
way waits for that grant only when the grant is not sent yet (its call is then sized,
or sized again, to count it: `RedisState.join`), and otherwise asks with a grant of
its own in the next pipeline. The script answers every request a grant counts: a
slot, or a refusal (`scripts.ADMIT`'s cut), so a request waits for one grant, and the
grant for the round trip in flight at most. Each takes its share as the grant comes
(requests arriving meanwhile cannot take it first). It waited for up to three grants,
each sized before it came and spent by requests arriving after it: at a store
answering each round trip in 0.36 of the timeout, 0-20 % of the admissions of a
steady load got 503 at 200 gates, 62-95 % at one busy gate; and near a concurrency
limit, a grant halved to what was free sent those waiting for it to ask again (2-9 %
got 503; under `fail_open` they were admitted by the local fallback, a replica
holding 39 leases against a limit of 20), though every round trip was answered
well within the timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .base import FREE_LEASE, Gate, GateSpec, Lease
from .client import RoundTripFailed
from .credit import MAX_GRANT, Credit, Demand, hold_for
from .errors import BreakerOpen, QuotaExceeded, StateError
from .keys import TenantKeys
from .local import LocalGate
from .resp import Releases, bulk, bulks, evalsha
from .scripts import UNLIMITED

if TYPE_CHECKING:
    from .redisstate import RedisState, _Asked

__all__ = ["RedisGate", "Grant", "REFUSAL_CACHE", "CPU_REFILL"]

REFUSAL_CACHE = 0.1  # seconds a refusal (rate, CPU, open breaker) is answered locally
CPU_REFILL = 60.0  # seconds in which a spent CPU budget (`cpu_per_minute`) refills whole


def _number(value: float | int | None) -> str:
    return str(UNLIMITED) if value is None else repr(float(value))


def _again(refusal: QuotaExceeded) -> Callable[[], StateError]:
    """`refusal` made anew for each request it refuses (one instance raised in several
    tasks gathers all their tracebacks)."""
    return lambda: QuotaExceeded(str(refusal), refusal.retry_after, refusal.limit)


class _RedisLease:
    """Slots held in Redis under `lease_id` (of `credit`, when it came from a grant);
    released at most once. `probe`: this admission is its breaker's half-open probe."""

    __slots__ = ("_gate", "_id", "_credit", "degraded", "probe")

    def __init__(self, gate: RedisGate, lease_id: str, credit: Credit | None = None,
                 probe: bool = False) -> None:
        self._gate: RedisGate | None = gate
        self._id = lease_id
        self._credit = credit
        self.degraded = False
        self.probe = probe
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


class Grant:
    """A grant one request asked for, on its way: the requests waiting for a share of it
    (each answered with a lease from the credit it brings, the refusal `refuse` makes,
    or None when the grant failed), and what it asks for (`asked` admissions, `slots`
    of them at once, `need` of them for the requests it counts; 0 until its call is
    built). `request` is its admission in the state's queue; `sent` is set by the
    state's thread (under its batch lock) once nobody may join it."""

    __slots__ = ("waiting", "asked", "slots", "need", "refuse", "request", "sent")

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[Lease | None]] = []
        self.asked = 0
        self.slots = 0
        self.need = 0
        self.refuse: Callable[[], StateError] | None = None
        self.request: _Asked | None = None
        self.sent = False


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
        self._refund = (bulks(self.keys[:2]), bulks([_number(fq.rate), _number(fq.bucket),
                                                     _number(tq.rate), _number(tq.bucket)]))
        self._refused: tuple[float, Exception] | None = None  # (monotonic until, refusal)
        self._pending_denials = 0
        # Nothing to count or check: no round trip at all.
        self.free = fq.unlimited and tq.unlimited and not spec.breaker
        self._hold = hold_for(spec.breaker is not None)
        self._demand = Demand(self._hold)
        self._credit: Credit | None = None
        self._grant: Grant | None = None  # the latest grant asked for, on its way
        self._inflight = 0  # its admissions not released yet, here
        self._peak = 0  # the most at once since its last grant
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

    def take_refund(self) -> int:
        """The unspent admissions of this gate's last credit not sent yet (for its next
        admission to carry), taken."""
        refund, self._refund_due = self._refund_due, 0
        return refund

    def command(self, lease_id: str, pending: int, want: int,
                releases: Releases | None, refund: int, grant: Grant | None = None) -> bytes:
        """The admission script's call for `want` admissions (those of `grant`, sized
        by `wanted`, when it asks for one), carrying `releases` (of this tenant) and
        `refund` unspent admissions of this gate's last credit."""
        slots, need = (1, 1) if grant is None else (grant.slots, grant.need)
        tail = b"%s%s%s%s%s" % (bulk(str(pending)), bulk(str(want)), bulk(str(refund)),
                                bulk(str(slots)), bulk(str(need)))
        if releases is None:
            return evalsha(self.state.admit_script.sha, 21, 5, self._keys, bulk(lease_id),
                           self._args, tail)
        count = releases.count
        return evalsha(self.state.admit_script.sha, 21 + 4 * count, 5 + count, self._keys,
                       *releases.keys, bulk(lease_id), self._args, tail, *releases.args)

    def refund(self, tokens: int) -> bytes:
        """The `REFUND` script's call giving back `tokens` unspent admissions."""
        keys, quotas = self._refund
        return evalsha(self.state.refund_script.sha, 7, 2, keys, bulk(str(tokens)), quotas)

    def admit(self) -> Lease:
        if self.free:
            return FREE_LEASE
        lease_id, pending = self._prepare()
        try:
            reply = self.state.admit(self, lease_id, pending)
        except RoundTripFailed as exc:
            self._pending_denials += pending
            return self.state.unavailable(self, str(exc))
        return self._decide(reply, lease_id, False)

    def admit_now(self) -> Lease | None:
        return FREE_LEASE if self.free else None

    async def admit_async(self) -> Lease:
        """`admit`, from this gate's credit when it has one (no round trip), else sent
        in one pipeline with the admissions of other requests that reached this point
        in the same turn of the event loop, asking for a credit when the gate is busy
        (see `credit`), or from a grant not sent yet, which then counts this request
        (see the module docstring); within the state's timeout from when it was
        called."""
        if self.free:
            return FREE_LEASE
        asked = time.monotonic()
        self._demand.add(asked)
        lease = self._take(asked)
        if lease is not None:
            return lease
        on_its_way = self._grant
        share = None if on_its_way is None else self.state.join(self, on_its_way)
        grant: Grant | None = None
        if on_its_way is not None and share is not None:
            lease = await self._share_of(share, asked)
            if lease is not None:
                return lease
            # The grant failed (its request gave up, or went away): asked alone.
        else:
            grant = Grant()  # sized when its call is built, those waiting counted
        lease_id, pending = self._prepare()
        if grant is not None:
            self._grant = grant
        try:
            try:
                reply = await self.state.admit_async(self, lease_id, pending, asked, grant)
            except RoundTripFailed as exc:
                self._pending_denials += pending
                return self.state.unavailable(self, str(exc))
            return self._decide(reply, lease_id, True, grant)
        finally:
            if grant is not None:
                self._hand_out(grant)

    async def _share_of(self, share: asyncio.Future[Lease | None],
                        asked: float) -> Lease | None:
        """This request's `share` of a grant once it comes: a lease, or None when the
        grant failed; its refusal raised; `on_unavailable` when the state's timeout
        from `asked` ends first."""
        timeout = self.state.settings.timeout
        try:
            await asyncio.wait((share,), timeout=asked + timeout - time.monotonic())
        except asyncio.CancelledError:
            if share.done() and not share.cancelled() and share.exception() is None:
                lease = share.result()
                if lease is not None:  # handed over as the request went away
                    lease.release()
            share.cancel()
            raise
        if share.done():
            return share.result()
        share.cancel()  # `_hand_out` passes it by
        return self.state.unavailable(self, f"shared state {self.state.where}: no answer "
                                            f"within {timeout:g} s")

    def _hand_out(self, grant: Grant) -> None:
        """`grant` came (or failed, or its request went away): each request still
        waiting for it takes its share now, from this gate's credit, before any request
        arriving later can; those it has none for get its refusal (`grant.refuse`), or
        None when it failed."""
        if self._grant is grant:
            self._grant = None
        now = time.monotonic()
        for share in grant.waiting:
            if share.done():
                continue
            lease = self._take(now)
            if lease is None and grant.refuse is not None:
                share.set_exception(grant.refuse())
            else:
                share.set_result(lease)

    def recount(self, grant: Grant, counted: int) -> None:
        """`grant`, its call built, counts `counted` requests: at least one admission
        and one slot each."""
        grant.need = min(MAX_GRANT, counted)
        grant.asked = max(grant.asked, grant.need)
        grant.slots = max(grant.slots, grant.need) if self._concurrent else grant.asked

    def wanted(self, grant: Grant) -> int:
        """Admissions `grant` asks for, its call being built now: what the gate's demand
        says, and at least one for each request waiting for it; its slots too."""
        waiting = len(grant.waiting)
        grant.need = min(MAX_GRANT, 1 + waiting)
        want = max(self._demand.want(), grant.need)
        # Slots: about as many as run here at once (they are reused within a credit),
        # not one per admission (each is a sorted-set member to add and remove), and
        # one for each request that starts with this grant: a credit with the tokens
        # but not the slots for those waiting sent them to ask again.
        slots = min(want, max(2 * max(self._peak, self._inflight) + 2, 1 + waiting))
        self._peak = self._inflight
        grant.asked, grant.slots = want, slots if self._concurrent else want
        return want

    def abandon(self, lease_id: str, reply: Sequence[str]) -> None:
        """Redis admitted `lease_id` (`reply`, well formed) for a request no longer
        waiting for it: its slots are released and its admissions refunded with the
        state's next flush (the caller sees to it), a probe it was let through freed.
        Reads nothing that changes: the state's thread calls it too."""
        granted = min(int(reply[4]), MAX_GRANT)
        if reply[1] == "1":
            self.state.free_probe(self, reply[3])
        if self._concurrent:
            for index in range(min(int(reply[5]), granted)):
                self.state.queue_release(self, f"{lease_id}.{index}" if index else lease_id,
                                         "0", flush=False)
        spec = self.spec
        if spec.function_quota.rate is not None or spec.tenant_quota.rate is not None:
            self.state.queue_refund(self, granted, flush=False)

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

    def _decide(self, reply: Sequence[str], lease_id: str, on_loop: bool,
                grant: Grant | None = None) -> Lease:
        """`reply` to the admission of `lease_id` (asking for `grant`, if any): a lease,
        or the refusal raised; `grant.refuse` is set to make the refusal of the
        requests waiting for it that its credit has no admission for."""
        kind = reply[0]
        if kind == "ok":
            probe = reply[1] == "1"
            if probe:
                self.state.probe_taken(self.ident, int(reply[2]), reply[3])
            credit = None
            if on_loop:
                # No more than a gate ever asks for: a store answering 2^33 had the loop
                # make as many lease ids (found by review).
                granted = min(int(reply[4]), MAX_GRANT)
                credit = self._credit_from(granted, min(int(reply[5]), granted), lease_id)
            if grant is not None and reply[6] != "none":
                grant.refuse = self._cut(reply[6], reply[7], reply[8])
            return _RedisLease(self, lease_id, credit, probe)
        if kind == "breaker":
            error = self._breaker_refusal(reply[1], float(reply[2]), float(reply[4]),
                                          int(float(reply[3])), seen=True)
            if grant is not None:
                grant.refuse = lambda: self._breaker_refusal(
                    reply[1], float(reply[2]), float(reply[4]), int(float(reply[3])))
            raise error
        refusal = self._quota_refusal(kind, reply[1], reply[2])
        if refusal is not None and grant is not None:
            grant.refuse = _again(refusal)
        if on_loop:  # a grant that came with this refusal still has some: not refused
            lease = self._take(time.monotonic())
            if lease is not None:
                return lease
        if refusal is None:  # an answer that is not this gate's: no such quota here
            scope = reply[1]
            label = f"{scope} {self.spec.function if scope == 'function' else self.spec.tenant}"
            return self.state.unavailable(self, f"shared state {self.state.where} answered "
                                                f"a {kind} refusal for {label}, which has "
                                                f"no {kind} quota")
        if kind != "concurrency":
            self._cache(refusal, refusal.retry_after)
        raise refusal

    def _cut(self, kind: str, scope: str, number: str) -> Callable[[], StateError] | None:
        """What refuses the requests a grant counted beyond what it granted (the
        script's cut: `kind`, `scope`, its number); None when the answer is not this
        gate's (they ask again)."""
        if kind == "breaker":  # the grant holds the half-open probe
            at = float(number)
            return lambda: self._breaker_refusal("half_open", at, at, 0)
        refusal = self._quota_refusal(kind, scope, number)
        if refusal is None:
            return None
        if kind == "rate":
            self._cache(refusal, refusal.retry_after)
        return _again(refusal)

    def _breaker_refusal(self, state: str, until: float, now: float, count: int,
                         seen: bool = False) -> BreakerOpen:
        """The refusal of a breaker the store found `state` (`open` until `until`, or
        `half_open` with its probe out since `until`), by Redis's clock `now`, after
        `count` violations; a refusal the store did not count is counted with the next
        admission. `seen`: the store answered it (remembered, cached)."""
        shown = until
        if state == "open":
            # A breaker opens for its cooldown: a later end (a stray write, a hostile
            # store, 2^33 s passed as a number) is no wait to tell a client. Another
            # replica's longer cooldown is told again when this one's is over; the text
            # says the end the store holds (the capped one was not true).
            until = min(until, now + self.state.cooldown)
        retry = max(1.0, until - now) if state == "open" else 1.0
        error = BreakerOpen(self.state.breaker_message(self.spec.function, state, shown,
                                                       count), retry)
        if seen:
            self.state.saw_open(self.ident, until if state == "open" else None, now)
            self._cache(error, min(retry, REFUSAL_CACHE))
        else:
            self._pending_denials += 1
        return error

    def _quota_refusal(self, kind: str, scope: str, number: str) -> QuotaExceeded | None:
        """The refusal for `kind` (concurrency, rate, cpu) of `scope` (function, tenant)
        the store answered, with its wait `number`; None when this gate has no such
        quota."""
        spec = self.spec
        label = f"{scope} {spec.function if scope == 'function' else spec.tenant}"
        quota = spec.function_quota if scope == "function" else spec.tenant_quota
        limit = {"concurrency": quota.concurrency, "cpu": quota.cpu_per_minute,
                 "rate": quota.rate}[kind]
        if limit is None:
            return None
        if kind == "concurrency":
            return QuotaExceeded(f"{label}: {quota.concurrency} concurrent invocations at "
                                 "most", 1.0, "concurrency")
        # No longer than a limit can make a client wait (the store may say up to 2^33
        # s): a rate's bucket is its quota's own, at most its window ahead (burst /
        # rate), so its wait is one interval, within the window; a CPU budget refills
        # whole within CPU_REFILL (a run that overdrew it by more is refused again
        # then, with what is left).
        wait = min(float(number), quota.bucket / limit if kind == "rate" else CPU_REFILL)
        if kind == "cpu":
            return QuotaExceeded(f"{label}: CPU budget of {quota.cpu_per_minute:g} s per "
                                 "minute spent", wait, "cpu")
        return QuotaExceeded(f"{label}: more than {quota.rate:g} requests per second",
                             wait, "rate")

    def _cache(self, error: Exception, seconds: float) -> None:
        # Only refusals no other replica can lift sooner (see the module docstring).
        self._refused = (time.monotonic() + min(seconds, REFUSAL_CACHE), error)

    def release(self, lease_id: str, cpu_seconds: float) -> None:
        """Give back `lease_id`'s slots and charge CPU (nothing to send: no round trip)."""
        charge = cpu_seconds > 0 and self._cpu != str(UNLIMITED)
        if self._concurrent or charge:
            self.state.queue_release(self, lease_id, repr(cpu_seconds) if charge else "0")
