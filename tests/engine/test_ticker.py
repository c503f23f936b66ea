"""The epoch ticker maps wall-clock deadlines onto epochs without periodic ticking."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import pytest

from stockade.engine import EpochTicker


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()

    def increment(self) -> None:
        with self.lock:
            self.value += 1


def test_epoch_reaches_each_deadline_in_time() -> None:
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    with ticker.deadline(0.2) as short, ticker.deadline(5.0) as long:
        assert short is not None and long is not None and short < long
        time.sleep(0.3)
        assert counter.value >= short  # the short run's deadline has passed
        assert counter.value < long  # the long one's has not
    ticker.close()
    ticker.close()


def test_no_deadline_no_thread() -> None:
    counter = Counter()
    ticker = EpochTicker(counter.increment)
    with ticker.deadline(None) as ticks:
        assert ticks is None
        time.sleep(0.05)
    assert counter.value == 0
    ticker.close()


def test_idle_time_is_not_counted() -> None:
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    with ticker.deadline(0.02):
        time.sleep(0.05)
    reached = counter.value
    time.sleep(0.1)  # idle: nothing registered
    with ticker.deadline(1.0) as ticks:
        assert ticks is not None and ticks >= 1.0 / 0.005 - 1
    assert counter.value == reached
    ticker.close()


def test_a_shorter_deadline_wakes_a_ticker_sleeping_toward_a_longer_one() -> None:
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    with ticker.deadline(30.0):
        time.sleep(0.02)  # the thread now sleeps toward the 30 s deadline
        with ticker.deadline(0.1) as short:
            assert short is not None
            time.sleep(0.5)
            assert counter.value >= short  # reached long before the 30 s one
    ticker.close()


def test_a_watcher_runs_every_interval_while_runs_are_registered() -> None:
    calls = Counter()
    ticker = EpochTicker(lambda: None, interval=0.005, watch=calls.increment)
    with ticker.deadline(None):
        time.sleep(0.3)
    seen = calls.value
    assert seen >= 5  # generous: about 60 on an idle machine
    time.sleep(0.1)  # nothing registered: the watcher rests
    assert calls.value <= seen + 1
    ticker.close()


def test_a_run_ending_as_the_loop_passes_its_deadline() -> None:
    """The loop pops a deadline it passes; a run leaving at that moment (its thread
    preempted between finding its deadline and unregistering it) must not fail."""
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    unregister = ticker.unregister

    def preempted(target: list[object] | None) -> None:
        time.sleep(0.1)  # the loop passes the deadline meanwhile
        unregister(target)

    ticker.unregister = preempted  # type: ignore[method-assign]
    with ticker.deadline(0.01) as ticks:
        assert ticks is not None
    assert counter.value >= ticks
    with ticker.deadline(0.01):  # the ticker still serves runs
        pass
    ticker.close()


def test_a_failing_watcher_does_not_stop_the_deadlines() -> None:
    """The ticker is all that stops a guest without fuel: a watcher that raises (a seal
    refused by the kernel) must not end its thread."""
    counter = Counter()
    calls = []

    def watch() -> None:
        calls.append(1)
        raise OSError("seal refused")

    ticker = EpochTicker(counter.increment, interval=0.005, watch=watch)
    with ticker.deadline(0.05) as first:
        assert first is not None
        _wait_for(lambda: counter.value >= first - 1)
    with ticker.deadline(0.05) as second:
        assert second is not None
        # Both deadlines reached: waited for, not slept on (a loaded machine can keep
        # the ticker's thread off a core for longer than the deadline).
        _wait_for(lambda: counter.value >= first + second - 1)
    assert len(calls) > 1
    ticker.close()


def _wait_for(condition: Callable[[], bool], patience: float = 10.0) -> None:
    deadline = time.monotonic() + patience
    while not condition():
        assert time.monotonic() < deadline, "not within 10 s"
        time.sleep(0.01)


def test_ended_runs_do_not_grow_the_heap() -> None:
    """Runs with long deadlines that end at once (the gateway's, thousands a second)
    leave entries behind: compacted, the heap stays within twice the live runs plus a
    bound, whatever the number of runs."""
    ticker = EpochTicker(Counter().increment, interval=0.005)
    with ticker.deadline(30.0):
        for _ in range(10_000):
            entry, _ = ticker.register(30.0)
            ticker.unregister(entry)
        assert len(ticker._deadlines) <= 2 * 1 + 130
    ticker.close()


def test_a_run_set_up_across_a_catch_up_is_still_stopped() -> None:
    """A run's epoch deadline is counted from the epoch when its store is set up, after it
    registered: a catch-up in between (another run's deadline falling due) puts it that
    many ticks past the run's entry. Once the entry has passed, the epoch must go on
    advancing while the run goes on, or nothing stops the run until some other deadline
    falls due (here 30 s later; a guest without fuel on an epochs engine ran on with
    nothing registered)."""
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    start = time.monotonic()
    with ticker.deadline(30.0):  # another run, going on
        early, _ = ticker.register(0.05)
        victim, ticks = ticker.register(0.2)
        assert ticks is not None
        time.sleep(0.1)  # the victim's set-up, across the early deadline's catch-up
        ticker.unregister(early)
        deadline = counter.value + ticks  # what `set_epoch_deadline(ticks)` makes of it
        assert counter.value > 0  # the early deadline's catch-up came in the set-up
        _wait_for(lambda: counter.value >= deadline, patience=5.0)
        ticker.unregister(victim)
    assert time.monotonic() - start < 5.0
    ticker.close()


def test_an_ended_run_left_in_the_heap_moves_no_epoch() -> None:
    """An ended run's entry reaching the head is dropped without a catch-up: the epoch moves
    for deadlines of runs that go on, as before entries were left behind."""
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    with ticker.deadline(30.0):
        entry, _ = ticker.register(0.02)
        ticker.unregister(entry)
        time.sleep(0.1)
        assert counter.value == 0
    ticker.close()


def test_a_run_set_up_across_a_catch_up_is_not_late_by_the_epochs_lag() -> None:
    """While only far deadlines are registered the thread sleeps and the epoch lags the
    clock. A run registering then, whose set-up crosses another deadline's catch-up, had
    its store's deadline counted from the caught-up epoch: late by the whole lag (0.5 s
    timeouts ran 2.5 s). The epoch is brought up to the clock when a run registers."""
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    with ticker.deadline(60.0), ticker.deadline(0.9):
        time.sleep(0.89)  # the epoch stands still: nothing falls due before 0.9 s
        start = time.monotonic()
        victim, ticks = ticker.register(0.1)
        assert ticks is not None
        time.sleep(0.05)  # the set-up, across the 0.9 s deadline's catch-up
        deadline = counter.value + ticks  # what `set_epoch_deadline(ticks)` makes of it
        _wait_for(lambda: counter.value >= deadline, patience=5.0)
        stopped = time.monotonic() - start
        ticker.unregister(victim)
    # 0.1 s, the grace tick and a loaded machine's delays: well under the 0.9 s lag.
    assert stopped < 0.6, stopped
    ticker.close()


def test_a_deadline_is_a_finite_number_and_a_refused_one_registers_nothing() -> None:
    ticker = EpochTicker(Counter().increment, interval=0.005)
    for bad in (math.inf, math.nan):
        with pytest.raises(ValueError, match="finite"):
            ticker.register(bad)
    assert ticker._active == 0
    ticker.close()


def test_closing_keeps_the_deadlines_of_runs_in_flight() -> None:
    """An engine closed while a run goes on: the run is still stopped at its deadline
    (its epoch reached), no new run registers, and the thread ends with the last run."""
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    entry, ticks = ticker.register(0.1)
    assert ticks is not None
    ticker.close()
    with pytest.raises(RuntimeError, match="closed"):
        ticker.register(1.0)
    _wait_for(lambda: counter.value >= ticks)
    thread = ticker._thread
    assert thread is not None and thread.is_alive()
    ticker.unregister(entry)
    thread.join(5.0)
    assert not thread.is_alive()


def test_a_deadline_centuries_away_does_not_end_the_thread() -> None:
    """A wait past what the platform's lock timeout holds raised OverflowError in the
    thread, which ended it and every deadline of its engine (found by review: a run
    with `timeout=1e10` s)."""
    counter = Counter()
    ticker = EpochTicker(counter.increment, interval=0.005)
    far, _ = ticker.register(2e10)
    time.sleep(0.05)
    with ticker.deadline(0.05) as ticks:
        assert ticks is not None
        time.sleep(0.3)
        assert counter.value >= ticks
    ticker.unregister(far)
    ticker.close()
