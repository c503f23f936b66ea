"""The native library's run deadlines (`_native.c`): one thread per process fires each
listed tripwire at its deadline (`Tripwire.due` / `undue`), never one taken off the list,
never before its time; on an epochs engine it moves the epoch at a run's deadline, and
every other run on that engine, judged by its own clock, goes on. A forked child keeps
deadlines with a thread of its own."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable

import pytest
import wasmtime

from stockade import Policy, Sandbox
from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastEngine
from stockade.engine.trip import DEADLINE_GRACE, Tripwire, available
from stockade.result import Outcome

from .test_fastpath import run_mode  # noqa: F401 - every test on the native and the ctypes run

pytestmark = pytest.mark.skipif(not available(), reason="the native library is not built")

SPIN = b'(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'
QUICK = b'(module (memory (export "memory") 1) (func (export "_start")))'
# About 0.1-0.5 s of counting: longer than QUICK's deadline, far within BUSY's own.
BUSY = b"""(module (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $l (br_if $l (i32.ne (local.tee $i (i32.add (local.get $i) (i32.const 1)))
                               (i32.const 300000000))))))"""


def binary(text: bytes) -> bytes:
    return bytes(wasmtime.wat2wasm(text.decode()))


def _wait_for(condition: Callable[[], bool], patience: float = 10.0) -> bool:
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_a_listed_tripwire_fires_at_its_deadline_and_not_before() -> None:
    trip = Tripwire()
    start = time.monotonic()
    trip.due(start + 0.15)
    time.sleep(0.05)
    assert not trip.fired  # well before its deadline
    assert _wait_for(lambda: trip.fired)
    assert time.monotonic() - start >= 0.15 + DEADLINE_GRACE
    trip.undue()


def test_a_tripwire_taken_off_is_never_fired() -> None:
    """A run that ended before its deadline: its slot's tripwire, reset for the next run,
    must not be fired by the old deadline (the next run would trap at once)."""
    ended, running = Tripwire(), Tripwire()
    now = time.monotonic()
    ended.due(now + 0.02)
    ended.undue()
    running.due(now + 0.08)
    assert _wait_for(lambda: running.fired)
    time.sleep(0.05)
    assert not ended.fired
    running.undue()


def test_many_deadlines_fire_each_at_its_own_time() -> None:
    trips = [Tripwire() for _ in range(40)]
    now = time.monotonic()
    # Listed out of order: the thread sleeps until the earliest, whatever was listed last.
    for index in reversed(range(len(trips))):
        trips[index].due(now + 0.02 + 0.005 * index)
    assert _wait_for(lambda: trips[0].fired)
    assert not trips[-1].fired or time.monotonic() >= now + 0.02 + 0.005 * 39
    assert _wait_for(lambda: all(trip.fired for trip in trips))
    for trip in trips:
        trip.undue()


def test_listing_again_moves_the_deadline() -> None:
    trip = Tripwire()
    trip.due(time.monotonic() + 0.02)
    trip.due(time.monotonic() + 30.0)  # the same tripwire, listed once, later
    time.sleep(0.1)
    assert not trip.fired
    trip.due(time.monotonic())
    assert _wait_for(lambda: trip.fired)
    trip.undue()


def _deadline_thread_wakes() -> int:
    """How often the library's deadline thread has slept and woken (its voluntary
    context switches), found by its name."""
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as comm:
            if comm.read().strip() != "stockade-due":
                continue
        with open(f"/proc/self/task/{task}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    raise AssertionError("no thread named stockade-due")


def test_runs_far_shorter_than_their_deadlines_do_not_wake_the_thread_each() -> None:
    """Each run of a gateway's hello woke the thread (a signal and two context switches)
    where a core was free to run it: it had found the list emptied and slept untimed.
    An emptied list keeps it sleeping as long as the runs' time; a shorter deadline
    listed meanwhile still wakes it and fires on time."""
    trip = Tripwire()
    trip.due(time.monotonic() + 30.0)
    trip.undue()
    time.sleep(0.01)
    before = _deadline_thread_wakes()
    for _ in range(300):
        trip.due(time.monotonic() + 30.0)
        trip.undue()  # a run shorter than the thread's wake-up: it finds the list empty
        time.sleep(0.0005)
    assert _deadline_thread_wakes() - before < 10
    start = time.monotonic()
    trip.due(start + 0.05)
    assert _wait_for(lambda: trip.fired)
    assert time.monotonic() - start < 5.0
    trip.undue()


def test_a_forked_child_keeps_its_own_deadlines() -> None:
    """fork() copies no thread: the child starts its own at its first deadline, and a
    deadline its parent listed (another thread's run) is not the child's."""
    parent_run = Tripwire()
    parent_run.due(time.monotonic() + 0.3)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its own deadline fires
        code = 1
        try:
            child_run = Tripwire()
            child_run.due(time.monotonic() + 0.02)
            if _wait_for(lambda: child_run.fired, 5.0):
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _wait_for(lambda: parent_run.fired)  # the parent's thread goes on
    parent_run.undue()


def test_a_run_that_ended_early_leaves_no_deadline_to_its_slot() -> None:
    """A run ends long before its deadline; the same slot's next run computes past that
    deadline and must exit: the first run's deadline was taken off (`undue`), not left
    to fire into the next run's page."""
    config = EngineConfig.for_limits(Policy.from_profile("default").limits)
    with FastEngine(config, max_instances=1) as engine:
        quick = engine.compile(binary(QUICK))
        busy = engine.compile(binary(BUSY))
        assert quick.run(timeout_s=0.05).outcome is Outcome.EXITED
        started = time.monotonic()
        result = busy.run(timeout_s=30.0)
        assert result.outcome is Outcome.EXITED, result.message
        assert time.monotonic() - started > 0.05 + DEADLINE_GRACE, "busy too short to tell"


def test_the_sandbox_keeps_its_tripwire_deadline_with_the_library() -> None:
    policy = Policy.from_profile("default").with_limits(timeout=0.2)
    begun = time.monotonic()
    result = Sandbox(policy).run(binary(SPIN))
    assert result.outcome is Outcome.TIMEOUT, result.message
    assert 0.2 <= time.monotonic() - begun < 5.0


def test_one_runs_deadline_on_an_epochs_engine_stops_no_other() -> None:
    """The epoch is the engine's: the deadline thread moves it at each run's deadline.
    A run computing past other runs' deadlines on the same engine is asked at every
    move, and goes on until its own (or its end)."""
    with FastEngine(EngineConfig(fuel=True, epochs=True), max_instances=4) as engine:
        spin, busy = engine.compile(binary(SPIN)), engine.compile(binary(BUSY))
        stopped: list[Outcome] = []

        def spinner(timeout: float) -> None:
            stopped.append(spin.run(timeout_s=timeout, fuel=10**15).outcome)

        threads = [threading.Thread(target=spinner, args=(0.02 * (n + 1),)) for n in range(3)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        result = busy.run(timeout_s=30.0, fuel=10**15)
        for thread in threads:
            thread.join(10.0)
        assert result.outcome is Outcome.EXITED, result.message
        assert time.monotonic() - started > 0.06 + DEADLINE_GRACE, "busy too short to tell"
        assert stopped == [Outcome.TIMEOUT] * 3
        # Its own deadline still holds.
        begun = time.monotonic()
        late = spin.run(timeout_s=0.1, fuel=10**15)
        assert late.outcome is Outcome.TIMEOUT and late.message == "wall-clock timeout"
        assert 0.1 <= time.monotonic() - begun < 5.0


def test_a_closed_slot_leaves_nothing_on_the_list() -> None:
    """The list holds pointers into a slot's memory: closing a slot takes its deadlines
    off first, whatever a run left there."""
    from stockade.engine.fastpath._native import WATCH
    from stockade.engine.fastpath._run import RunSlot

    slot = RunSlot(epochs=True)
    assert slot.trip is not None and slot.watch is not None and WATCH is not None
    slot.trip.due(time.monotonic() + 30.0)
    assert slot.trip.state.due.listed
    slot.close()
    assert not slot.trip.state.due.listed and not slot.watch.due.listed


def test_a_deadline_centuries_away_is_no_deadline_not_a_past_one() -> None:
    """Nanoseconds past int64 wrapped in ctypes: 1e10 s became a deadline already past
    (the ctypes run timed out at once) or none at all (the native run)."""
    from stockade.engine.trip import due_ns

    assert due_ns(1e300) == (1 << 63) - 1 and due_ns(-5.0) == 0
    with FastEngine(EngineConfig.for_limits(Policy.from_profile("default").limits),
                    max_instances=1) as engine:
        assert engine.compile(binary(QUICK)).run(timeout_s=1e10).outcome is Outcome.EXITED


def test_a_tripwire_dropped_while_listed_takes_itself_off() -> None:
    trip = Tripwire()
    trip.due(time.monotonic() + 0.05)
    del trip  # an interrupt skipped its run's `finally`: nothing may point at it now
    time.sleep(0.15)  # the deadline thread walked the list: no crash
    assert Tripwire().state.due.listed == 0


def test_a_child_touching_an_entry_its_parent_listed_keeps_its_own_deadlines() -> None:
    """An entry listed at fork is not on the child's list: taking it off there must not
    drop the child's own deadlines (it unlinked them through its parent-list links)."""
    parent_a, parent_b = Tripwire(), Tripwire()
    parent_a.due(time.monotonic() + 60.0)
    parent_b.due(time.monotonic() + 60.0)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child_run = Tripwire()
            child_run.due(time.monotonic() + 0.05)
            parent_b.undue()
            if _wait_for(lambda: child_run.fired, 5.0) and not parent_a.state.due.listed:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    parent_a.undue()
    parent_b.undue()
    assert os.waitstatus_to_exitcode(status) == 0


def _protection(address: int) -> str:
    """The `rwxp` flags /proc/self/maps shows for the page at `address`."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, flags = line.split()[:2]
            low, high = (int(part, 16) for part in span.split("-"))
            if low <= address < high:
                return flags
    raise AssertionError(f"{address:#x} is not mapped")


def test_a_slot_whose_last_run_never_disarmed_still_trips_its_next_run() -> None:
    """An interrupt inside a run's `finally` skipped `disarm`: the tripwire still says
    its (old) page is revoked. The next run arms a new page; its deadline must revoke
    that page, or the guest runs past every deadline."""
    import mmap

    old, new = (mmap.mmap(-1, mmap.PAGESIZE) for _ in range(2))
    old_page = ctypes.addressof(ctypes.c_char.from_buffer(old))
    new_page = ctypes.addressof(ctypes.c_char.from_buffer(new))
    trip = Tripwire()
    trip.arm(old_page)
    trip.fire()
    assert _protection(old_page).startswith("---")
    # The old run's `disarm` never comes.
    trip.reset()
    trip.arm(new_page)
    trip.fire()
    try:
        assert _protection(new_page).startswith("---"), "the new run's page was not revoked"
    finally:
        trip.disarm()
    assert _protection(new_page).startswith("rw")
