"""Which runs need their host calls metered in Python: the one place it is decided.

The C-API fast path runs a module unmetered when it can: its native library serves and
counts a few owned calls itself (the standard streams and their syncs, `random_get`,
`poll_oneoff`), as `handlers` counts them, one call of the budget per call. Everything
else the policy asks for (directories and their quotas, per-call caps, a host-call
budget over calls the unmetered run does not serve) needs a `Meter`, so that every
backend counts the same calls of `handlers.HANDLERS` and stops the guest at the same one.
"""

from __future__ import annotations

from collections.abc import Iterable

from .abi import INTERPOSED, MODULE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..policy import Policy

__all__ = ["meter_reason", "owned_imports"]


def owned_imports(imports: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The owned WASI calls among a module's (module, name) imports."""
    return frozenset(name for module, name in imports
                     if module == MODULE and name in INTERPOSED)


def meter_reason(policy: Policy, owned: frozenset[str], counted: frozenset[str]) -> str | None:
    """Why runs under `policy` of a module importing the owned calls `owned` need a
    `Meter`, or None when the unmetered run holds every limit. `counted` are the calls
    the unmetered run serves and counts itself (empty without the native library)."""
    caps, limits = policy.capabilities, policy.limits
    if caps.dirs or caps.scratch is not None:
        return "it is granted directories"
    capped = owned & {name for name, _ in limits.hostcall_caps}
    if capped:
        return f"it imports {min(capped)}, which its policy caps per call"
    uncounted = owned - counted
    if limits.max_hostcalls is not None and uncounted:
        return (f"it has a host-call budget and imports {min(uncounted)}, which only a "
                "metered run counts")
    return None
