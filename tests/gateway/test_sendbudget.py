"""The send budget's choice of connections to cut off, and the pace it judges them by."""

from __future__ import annotations

from stockade.gateway.requestbudget import RECENT
from stockade.gateway.sendbudget import FIRST_LOOK, Holding, Pace, SendBudget

MiB = 1024**2


def test_nothing_is_cut_within_the_budget() -> None:
    budget = SendBudget(8 * MiB)
    assert budget.cuts([Holding("a", "1.1.1.1", 4 * MiB, True),
                        Holding("b", "2.2.2.2", 4 * MiB, True)]) == []
    assert budget.held == 8 * MiB


def test_the_largest_holders_slow_connections_go_first_until_the_rest_fits() -> None:
    budget = SendBudget(8 * MiB)
    holdings = [Holding(f"attacker{n}", "6.6.6.6", 3 * MiB, True) for n in range(6)]
    holdings.append(Holding("honest", "1.1.1.1", 2 * MiB, True))
    cuts = budget.cuts(holdings)
    # 20 MiB held: 12 MiB over. The honest client is within its share (4 MiB).
    assert len(cuts) == 4 and all(cut.startswith("attacker") for cut in cuts)
    assert budget.held == 8 * MiB


def test_connections_about_to_be_done_of_clients_within_their_share_are_never_cut() -> None:
    budget = SendBudget(8 * MiB)
    holdings = [Holding("fast", "6.6.6.6", 12 * MiB, False),
                Holding("fast-within-share", "1.1.1.1", 3 * MiB, False)]
    assert budget.cuts(holdings) == ["fast"]
    assert budget.held == 3 * MiB


def test_lasting_connections_go_before_those_about_to_be_done() -> None:
    budget = SendBudget(8 * MiB)
    holdings = [Holding("fast1", "6.6.6.6", 4 * MiB, False),
                Holding("fast2", "6.6.6.6", 4 * MiB, False),
                Holding("lasting", "6.6.6.6", 2 * MiB, True)]
    assert budget.cuts(holdings) == ["lasting"]
    assert len(budget.cuts([*holdings[:2], Holding("more", "6.6.6.6", 4 * MiB, False)])) \
        == 1


def test_slow_connections_within_their_share_cannot_get_a_download_reset() -> None:
    """Three connections taking 7 MB answers at 1 KB/s, each just within its share (the
    kernel holds ~2.8 MB of each), got every honest 8 MiB download reset as it began,
    and stayed (found by review): slow ones go first, within their share or not."""
    budget = SendBudget(16 * MiB)
    holdings = [Holding(f"attacker{n}", f"6.6.6.{n}", 4_200_000, True, True)
                for n in range(3)]
    holdings.append(Holding("download", "1.1.1.1", 7_600_000, False))
    cuts = budget.cuts(holdings)
    assert cuts == ["attacker0"] or cuts == ["attacker1"] or cuts == ["attacker2"]
    assert budget.held <= 16 * MiB


def test_fast_readers_above_their_share_are_cut_when_lasting_ones_do_not_suffice() -> None:
    """Sparing every connection about to be done let 120 connections reading 900 KB/s
    hold 960 MB (found by review)."""
    budget = SendBudget(16 * MiB)
    holdings = [Holding(f"attacker{n}", "6.6.6.6", 8 * MiB, False) for n in range(60)]
    holdings.append(Holding("download", "1.1.1.1", 5 * MiB, True))
    cuts = budget.cuts(holdings)
    assert "download" not in cuts and len(cuts) == 59
    assert budget.held <= 16 * MiB


def test_a_download_within_its_share_outlasting_the_horizon_is_spared() -> None:
    """Cutting every lasting connection first let one address reading three 8 MiB
    answers at 1.8 MB/s get an honest 100 KB/s download reset (found by review)."""
    budget = SendBudget(16 * MiB)
    holdings = [Holding(f"attacker{n}", "6.6.6.6", 8 * MiB, False) for n in range(3)]
    holdings.append(Holding("download", "1.1.1.1", 8 * MiB, True, False))
    cuts = budget.cuts(holdings)
    assert "download" not in cuts and len(cuts) == 2


def test_many_addresses_each_holding_a_little_are_cut_past_the_budget() -> None:
    budget = SendBudget(8 * MiB)
    holdings = [Holding(n, f"10.0.0.{n}", MiB, True) for n in range(32)]
    cuts = budget.cuts(holdings)
    assert len(cuts) == 24 and budget.held == 8 * MiB


def test_a_large_answer_taking_the_total_past_the_budget_brings_a_pass_forward() -> None:
    budget = SendBudget(8 * MiB)
    budget.cuts([Holding("a", "1.1.1.1", 6 * MiB, False)])
    assert not budget.added_answer(MiB)
    assert budget.added_answer(2 * MiB)
    budget.cuts([])
    assert budget.added == 0 and not budget.added_answer(MiB)
    # A pass that left the total past the budget: the sweep's passes go on, and an
    # answer does not bring one forward (each was a pass over every connection).
    budget.cuts([Holding("fast", "1.1.1.1", 12 * MiB, False)])
    assert not budget.added_answer(MiB) and not budget.added_answer(4 * MiB)


def test_bytes_that_would_outlast_the_horizon_are_lasting_whatever_the_pace() -> None:
    horizon = 10.0
    pace = Pace(0.0, 8 * MiB)
    assert not pace.lasting(FIRST_LOOK / 2, 8 * MiB, horizon)  # too early to tell
    assert pace.lasting(FIRST_LOOK, 8 * MiB, horizon)  # nothing taken
    # 80 KB/s is 64 times 1 KiB/s, and would hold 8 MiB for 100 s: lasting.
    assert pace.lasting(RECENT, 8 * MiB - 160_000, horizon)
    # 1 MiB/s takes 7 MiB within the horizon: not.
    assert not pace.lasting(RECENT, 7 * MiB - 2 * MiB, horizon)


def test_a_burst_then_a_trickle_is_judged_by_the_trickle() -> None:
    horizon = 10.0
    pace = Pace(0.0, 4 * MiB)
    pace.update(RECENT, 3 * MiB, grew=False)  # 1 MiB in 2 s
    pace.update(2 * RECENT, 3 * MiB - 1024, grew=False)  # then a trickle
    assert pace.lasting(2 * RECENT + 0.5, 3 * MiB - 2048, horizon)
    pace.update(3 * RECENT, 8 * MiB, grew=True)  # a new answer: judged afresh
    assert not pace.lasting(3 * RECENT + FIRST_LOOK / 2, 8 * MiB, horizon)


def test_slow_is_below_a_rate_whatever_the_bytes() -> None:
    rate = 64 * 1024
    pace = Pace(0.0, 8 * MiB)
    assert not pace.slow(FIRST_LOOK / 2, 8 * MiB, rate)  # too early to tell
    assert pace.slow(RECENT, 8 * MiB - 1024, rate)  # 512 B/s
    assert not pace.slow(RECENT, 8 * MiB - 200_000, rate)  # 100 KB/s: lasting, not slow
    assert pace.lasting(RECENT, 8 * MiB - 200_000, 10.0)
