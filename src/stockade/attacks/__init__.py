"""The attack suite: hostile modules, a runner that measures their host impact from
outside, and containment verdicts (`stockade attack`)."""

from __future__ import annotations

from .catalogue import ATTACKS, Attack, find_attacks
from .impact import Impact
from .runner import AttackRun, AttackRunner, RunnerOptions
from .verdict import Bounds, Verdict, bounds_for, judge

__all__ = [
    "ATTACKS",
    "Attack",
    "find_attacks",
    "Impact",
    "AttackRun",
    "AttackRunner",
    "RunnerOptions",
    "Bounds",
    "Verdict",
    "bounds_for",
    "judge",
]
