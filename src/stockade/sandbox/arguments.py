"""What every sandbox takes besides a module: a `Policy` and an `Invocation`.

One check each, for the in-process, isolated, asyncio and pooled sandboxes (the module
has its own, `modulearg`), made before anything starts, so a caller's mistake is a
UsageError naming it, never an AttributeError from inside nor a worker's failure.
No wasmtime here: the isolated sandbox's parent uses it.
"""

from __future__ import annotations

from ..errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..invocation import Invocation
    from ..policy import Policy

__all__ = ["policy_argument", "invocation_argument"]


def policy_argument(policy: object, who: str) -> Policy:
    """`policy`, or the default profile's for None; UsageError naming `who` for anything
    that is no `Policy` (a profile's name among them)."""
    from ..policy import Policy

    if policy is None:
        return Policy.from_profile("default")
    if not isinstance(policy, Policy):
        hint = f"Policy.from_profile({policy!r})" if isinstance(policy, str) \
            else "Policy.from_profile(...)"
        raise UsageError(f"{who}: expected a Policy ({hint}), not {type(policy).__name__}")
    return policy


def invocation_argument(invocation: object, who: str) -> Invocation:
    """`invocation`, or an empty one for None; UsageError naming `who` for anything that
    is no `Invocation`."""
    from ..invocation import Invocation

    if invocation is None:
        return Invocation()
    if not isinstance(invocation, Invocation):
        raise UsageError(f"{who}: expected an Invocation, not {type(invocation).__name__}")
    return invocation
