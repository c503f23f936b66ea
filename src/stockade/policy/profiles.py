"""The three built-in profiles, from the hardening checklist in design.md.

What each costs in compute (the `stockade bench` kernels against native, measured with
`scripts/measure_costs.py`): strict meters fuel (an instruction budget, deterministic)
and epochs; default and permissive pay for epochs only, the deadline (see the README).
"""

from __future__ import annotations

from ..errors import PolicyError
from .model import Limits, Policy

__all__ = ["PROFILES", "profile"]

MiB = 1024**2
GiB = 1024**3

PROFILES: dict[str, Limits] = {
    "strict": Limits(
        fuel=1_000_000_000, timeout=30.0, max_memory=16 * MiB, max_output=1 * MiB,
        disk_quota=0, max_files=0, max_open_files=32, max_stack=512 * 1024,
        max_table_elements=10_000, max_tables=4, max_instances=4,
        max_module_size=64 * MiB, max_function_size=256 * 1024, max_locals=1_000,
        max_hostcalls=1_000_000, sync="ignore",
        # Calls whose host cost is out of proportion to the guest's fuel.
        hostcall_caps=(("poll_oneoff", 10_000), ("random_get", 10_000), ("path_open", 10_000)),
    ),
    # No instruction budget: the timeout stops a runaway guest (epochs, no fuel).
    "default": Limits(),
    "permissive": Limits(
        fuel=None, timeout=600.0, max_memory=1 * GiB, max_output=256 * MiB,
        disk_quota=1 * GiB, max_files=100_000, max_open_files=1024, max_stack=2 * MiB,
        max_table_elements=1_000_000, max_hostcalls=None, sync="allow",
        max_module_size=512 * MiB, max_function_size=4 * MiB, max_locals=50_000,
    ),
}


def profile(name: str) -> Policy:
    """The policy for profile `name`. Raises PolicyError naming the valid choices."""
    try:
        limits = PROFILES[name]
    except KeyError:
        choices = ", ".join(PROFILES)
        raise PolicyError(f"unknown profile {name!r} (choose one of: {choices})") from None
    return Policy(limits=limits, profile=name)
