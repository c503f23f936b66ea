"""An owned `poll_oneoff` for clock subscriptions: sleeps that end at the run's deadline.

wasmtime's own poll_oneoff blocks in the host, where epoch interruption cannot reach
it: a guest calling sleep(8) under a 1 s timeout would run 8 s. Here the sleep is cut
at the deadline and the guest is stopped with `timeout`.
"""

from __future__ import annotations

import struct
import time

from ..result import GuestStopped, Outcome
from .abi import Errno, GuestMemory
from .meter import Meter

__all__ = ["ClockPoll", "parse_clock_subscriptions", "sleep_until_due"]

SUBSCRIPTION_SIZE = 48
EVENT_SIZE = 32
TAG_CLOCK = 0
CLOCK_REALTIME = 0
FLAG_ABSTIME = 1

ClockPoll = list[tuple[int, float]]  # (userdata, seconds to wait)


def parse_clock_subscriptions(raw: bytes, count: int) -> ClockPoll | None:
    """(userdata, relative wait) per subscription when all are relative or realtime
    clocks; None when any subscription waits on a descriptor or a monotonic absolute time
    (those are left to wasmtime)."""
    waits: ClockPoll = []
    for index in range(count):
        base = index * SUBSCRIPTION_SIZE
        userdata, tag = struct.unpack_from("<QB", raw, base)
        if tag != TAG_CLOCK:
            return None
        clock_id, timeout_ns, _precision, flags = struct.unpack_from("<I4xQQH", raw, base + 16)
        if flags & FLAG_ABSTIME:
            if clock_id != CLOCK_REALTIME:
                return None
            timeout_ns = max(0, timeout_ns - time.time_ns())
        waits.append((userdata, timeout_ns / 1e9))
    return waits


def sleep_until_due(meter: Meter, memory: GuestMemory, waits: ClockPoll, out: int) -> int:
    """Sleep until the earliest subscription is due, write its events at `out`, and return
    how many. Stops the guest with `timeout` when the deadline comes first."""
    shortest = min(wait for _, wait in waits)
    remaining = meter.remaining_time()
    if remaining is not None and remaining < shortest:
        time.sleep(max(remaining, 0.0))
        raise GuestStopped(Outcome.TIMEOUT, "wall-clock timeout (guest was sleeping)")
    if shortest > 0:
        time.sleep(shortest)
    due = [userdata for userdata, wait in waits if wait <= shortest]
    for index, userdata in enumerate(due):
        event = struct.pack("<QHBxxxxx", userdata, Errno.SUCCESS, TAG_CLOCK) + bytes(16)
        memory.write(out + index * EVENT_SIZE, event)
    return len(due)
