"""The owned `poll_oneoff`: parsing, bounds, absolute-to-relative clocks, deadline sleeps.

wasmtime's own poll_oneoff blocks in the host, where epoch interruption cannot reach it:
a guest calling sleep(8) under a 1 s timeout would run 8 s, and an absolute time on any
clock makes the wait as long as the guest likes. Here every clock subscription becomes
a relative wait (ABSTIME converted on the realtime and the guest's monotonic clock),
the sleep is cut at the run's deadline and the guest stopped with `timeout`.

One implementation for every path: `serve` is the whole call (bounds, parsing, the
sleep, the events); what differs is only who answers descriptor subscriptions. A
metered run (`handlers._poll_oneoff`, on either backend) forwards them to wasmtime
with its clocks made relative and bounded; the fast path's unmetered runs
(`engine.fastpath._poll`) answer them itself, its descriptors being always ready.
Pure: no `Meter`, no wasmtime, so the engine layer may import it.

Bounds: at most `MAX_SUBSCRIPTIONS` per call (EINVAL beyond, before any is read), so
parsing takes at most a few milliseconds and `MAX_SUBSCRIPTIONS * 48` bytes. A clock
waits at most `MAX_WAIT_NS` (a guest's 2^64-1 ns fits neither `time.sleep` nor, once
rounded, the u64 handed to wasmtime), slept in chunks of `_SLEEP_CHUNK_S`: a huge sleep
sleeps, until the deadline if there is one, or until its run's `wake` is set (a
cancellation: `Meter.stop_now`), which stops the guest as the deadline does.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable

from ..result import GuestStopped, Outcome
from .abi import GuestMemory

__all__ = ["MAX_SUBSCRIPTIONS", "MAX_WAIT_NS", "SUBSCRIPTION_SIZE", "EVENT_SIZE", "TAG_CLOCK",
           "Poll", "Stoppable", "check_count", "parse", "wait", "relative_clock", "pack_events",
           "put_events", "serve"]

# More subscriptions than any program polls at once (poll(2) callers pass one per fd,
# and the sandbox caps descriptors far lower); beyond it the call fails with EINVAL.
MAX_SUBSCRIPTIONS = 4096
SUBSCRIPTION_SIZE = 48
EVENT_SIZE = 32
TAG_CLOCK, TAG_FD_READ, TAG_FD_WRITE = 0, 1, 2
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
FLAG_ABSTIME = 1
_EFAULT, _EINVAL = 21, 28
_U32 = 0xFFFFFFFF
# The longest wait a clock asks for (~146 years): far below what a signed 64-bit count
# of nanoseconds holds, so it converts to a float of seconds and back without overflow.
MAX_WAIT_NS = 1 << 62
# The longest single `time.sleep` (the platform bounds it): longer waits are looped.
_SLEEP_CHUNK_S = 86_400.0

_HEAD = struct.Struct("<QB")  # userdata, tag
_CLOCK = struct.Struct("<I4xQQH")  # clock id, timeout, precision, flags (at offset 16)
_FD = struct.Struct("<I")  # descriptor (at offset 16)
_SUBSCRIPTION = struct.Struct("<QB7xI4xQQH6x")
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, errno, type, nbytes, flags


class Poll:
    """One call's subscriptions: `clocks` as (index, userdata, seconds to wait), `fds` as
    (index, userdata, tag, descriptor), `failed` as events due at once (userdata, errno,
    tag) for clocks the host does not offer. (A plain class: a dataclass costs
    `stockade run` its generated methods at import.)"""

    __slots__ = ("clocks", "fds", "failed")

    def __init__(self) -> None:
        self.clocks: list[tuple[int, int, float]] = []
        self.fds: list[tuple[int, int, int, int]] = []
        self.failed: list[tuple[int, int, int]] = []


def check_count(count: int) -> int | None:
    """EINVAL for no subscriptions or more than `MAX_SUBSCRIPTIONS`, else None: checked
    before the array is read."""
    return _EINVAL if not 0 < count <= MAX_SUBSCRIPTIONS else None


def parse(raw: bytes, count: int, clock_base_ns: int) -> Poll | int:
    """The `count` subscriptions in `raw` (checked by `check_count`), or an errno for the
    whole call (an unknown event type). Absolute times become waits from now: realtime
    against the host's clock, monotonic against the guest's, which counts from
    `clock_base_ns` (`time.monotonic_ns()` when its WASI context was made)."""
    found = Poll()
    realtime = monotonic = None
    for index in range(count):
        base = index * SUBSCRIPTION_SIZE
        userdata, tag = _HEAD.unpack_from(raw, base)
        if tag != TAG_CLOCK:
            if tag not in (TAG_FD_READ, TAG_FD_WRITE):
                return _EINVAL
            found.fds.append((index, userdata, tag, _FD.unpack_from(raw, base + 16)[0]))
            continue
        clock, timeout, _precision, flags = _CLOCK.unpack_from(raw, base + 16)
        if clock not in (CLOCK_REALTIME, CLOCK_MONOTONIC):
            found.failed.append((userdata, _EINVAL, TAG_CLOCK))
            continue
        if flags & FLAG_ABSTIME:
            if clock == CLOCK_REALTIME:
                realtime = time.time_ns() if realtime is None else realtime
                timeout -= realtime
            else:
                monotonic = time.monotonic_ns() - clock_base_ns if monotonic is None \
                    else monotonic
                timeout -= monotonic
        found.clocks.append((index, userdata, min(max(timeout, 0), MAX_WAIT_NS) / 1e9))
    return found


class Stoppable:
    """What a run's owned host calls sleep against: its `deadline` (monotonic seconds,
    None: none) and its `wake` event (`serve`). A `Meter`, or a fast-path `RunSlot`."""

    __slots__ = ("deadline", "wake")
    deadline: float | None
    wake: threading.Event

    def stop_now(self) -> None:
        """Move the deadline to now and wake a host call asleep in the guest's wait: the
        guest stops in the call it sleeps in or at its next one (a cancellation,
        `stockade.cancel`). Safe from any thread."""
        now = time.monotonic()
        self.deadline = now if self.deadline is None else min(self.deadline, now)
        self.wake.set()


def wait(clocks: list[tuple[int, int, float]], remaining: float | None,
         wake: threading.Event | None = None) -> list[int]:
    """Sleep until the earliest clock is due; the userdata of every clock due then.
    With `remaining` seconds to the deadline (None: no deadline) shorter than that,
    sleep to the deadline and raise GuestStopped (`timeout`); so too when `wake` is set
    before or while it sleeps."""
    shortest = min(seconds for _, _, seconds in clocks)
    if remaining is not None and remaining < shortest:
        _sleep(remaining, wake)
        raise GuestStopped(Outcome.TIMEOUT, _STOPPED)
    if _sleep(shortest, wake):
        raise GuestStopped(Outcome.TIMEOUT, _STOPPED)
    return [userdata for _, userdata, seconds in clocks if seconds <= shortest]


_STOPPED = "wall-clock timeout (guest was sleeping)"


def _sleep(seconds: float, wake: threading.Event | None) -> bool:
    """Sleep `seconds` (none when not positive), in chunks the platform accepts, or
    until `wake` is set: whether it was."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        if wake is None:
            time.sleep(min(left, _SLEEP_CHUNK_S))
        elif wake.wait(min(left, _SLEEP_CHUNK_S)):
            return True
    return wake is not None and wake.is_set()


def relative_clock(userdata: int, seconds: float) -> bytes:
    """A subscription waiting `seconds` on the monotonic clock, relative (no ABSTIME)."""
    return _SUBSCRIPTION.pack(userdata, TAG_CLOCK, CLOCK_MONOTONIC,
                              min(max(int(seconds * 1e9), 0), MAX_WAIT_NS), 0, 0)


def pack_events(events: list[tuple[int, int, int]]) -> bytes:
    """Events (userdata, errno, type) as the guest reads them (no bytes, no flags)."""
    return b"".join(_EVENT.pack(userdata, errno, tag, 0, 0) for userdata, errno, tag in events)


def put_events(mem: GuestMemory, out: int, nevents: int,
               events: list[tuple[int, int, int]]) -> None:
    """Store `events` at `out` and their number at `nevents` (both checked by `serve`)."""
    mem.write(out, pack_events(events))
    mem.put_u32(nevents, len(events))


# Answers a call with descriptor subscriptions: (parsed, the subscriptions' bytes,
# (subscriptions, events, count, nevents) as unsigned addresses) -> errno.
Descriptors = Callable[[Poll, bytes, tuple[int, int, int, int]], int]


def serve(mem: GuestMemory, args: tuple[int, int, int, int], clock_base_ns: int,
          remaining: float | None, descriptors: Descriptors,
          wake: threading.Event | None = None) -> int:
    """One `poll_oneoff(subscriptions, events, count, nevents)` on the guest's `mem`:
    EINVAL past the subscription bound and EFAULT for arrays outside memory (both before
    anything is read or slept); a call naming descriptors goes to `descriptors`; clocks
    alone sleep until the earliest is due, or to the deadline `remaining` seconds away
    (None: none) or until `wake` is set, where GuestStopped (`timeout`) is raised.
    Returns the errno."""
    subs, out, count, nevents = (arg & _U32 for arg in args)
    errno = check_count(count)
    if errno is not None:
        return errno
    if not (mem.holds(subs, count * SUBSCRIPTION_SIZE) and mem.holds(out, count * EVENT_SIZE)
            and mem.holds(nevents, 4)):
        return _EFAULT
    raw = mem.read(subs, count * SUBSCRIPTION_SIZE)
    parsed = parse(raw, count, clock_base_ns)
    if isinstance(parsed, int):
        return parsed
    if parsed.fds:
        return descriptors(parsed, raw, (subs, out, count, nevents))
    events = parsed.failed or [(userdata, 0, TAG_CLOCK)
                               for userdata in wait(parsed.clocks, remaining, wake)]
    put_events(mem, out, nevents, events)
    return 0
