"""The catalogue is consistent: names, guest sources, expectations, the paper's strategies."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.attacks import ATTACKS, find_attacks
from stockade.attacks.catalogue import PROFILES_EXPECTED
from stockade.attacks.verdict import REFUSED
from stockade.errors import UsageError
from stockade.result import Outcome

SOURCES = Path(__file__).resolve().parents[2] / "guests" / "attacks"
PAPER_STRATEGIES = {
    "CPU", "memory", "large writes", "inode exhaustion", "fsync storm", "rapid small I/O",
    "entropy reads", "pseudo-terminals and devices", "multi-threading", "network floods",
}


def test_names_are_unique() -> None:
    names = [attack.name for attack in ATTACKS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_every_attack_has_a_guest_source(attack: object) -> None:
    from stockade.attacks import Attack

    assert isinstance(attack, Attack)
    stem = Path(attack.module).stem
    candidates = [SOURCES / f"{stem}.c", SOURCES / f"{stem}.wat", SOURCES / f"gen_{stem}.py"]
    assert any(path.is_file() for path in candidates), f"no source for {attack.module}"
    assert attack.module.startswith("attacks/") and attack.module.endswith(".wasm")


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_expectations_name_real_outcomes_for_both_profiles(attack: object) -> None:
    from stockade.attacks import Attack

    assert isinstance(attack, Attack)
    valid = {outcome.value for outcome in Outcome} | {REFUSED}
    assert set(attack.expected) == set(PROFILES_EXPECTED)
    for outcomes in attack.expected.values():
        assert outcomes and set(outcomes) <= valid
    assert attack.source in ("paper", "ours")
    assert attack.fresh in ("", "link", "salt")


def test_the_papers_strategies_are_all_covered() -> None:
    covered = {attack.strategy for attack in ATTACKS if attack.source == "paper"}
    assert covered == PAPER_STRATEGIES


def test_scratch_attacks_write_under_scratch() -> None:
    for attack in ATTACKS:
        if "/scratch" in attack.args:
            assert attack.scratch, attack.name


def test_find_attacks_keeps_catalogue_order_and_refuses_unknown_names() -> None:
    picked = find_attacks(("threads", "cpu_loop"))
    assert [attack.name for attack in picked] == ["cpu_loop", "threads"]
    assert find_attacks(()) == ATTACKS
    with pytest.raises(UsageError, match="no such attack"):
        find_attacks(("nope",))
