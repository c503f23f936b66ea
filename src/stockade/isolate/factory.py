"""`make_sandbox`: the `--isolate process|none` choice, made in one place."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError
from ..sandbox.arguments import policy_argument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..observe import RunObserver
    from ..policy import Policy
    from .base import SandboxLike
    from .config import IsolationConfig

__all__ = ["ISOLATION_MODES", "default_isolation", "make_sandbox"]

ISOLATION_MODES = ("process", "none")


def default_isolation(policy: Policy) -> str:
    """`process` for the `strict` profile, `none` otherwise."""
    return "process" if policy.profile == "strict" else "none"


def make_sandbox(policy: Policy, isolate: str | None = None,
                 observers: Sequence[RunObserver] = (), *,
                 config: IsolationConfig | None = None) -> SandboxLike:
    """A sandbox for `policy`: in this process (`none`) or in a hardened worker
    (`process`); `None` picks `default_isolation(policy)`. Raises UsageError for an
    unknown mode or a `policy` that is no Policy. Only the chosen kind is imported.
    """
    policy = policy_argument(policy, "make_sandbox")
    mode = default_isolation(policy) if isolate is None else isolate
    if mode == "none":
        from ..sandbox import Sandbox

        return Sandbox(policy, observers=observers)
    if mode == "process":
        from .process import IsolatedSandbox

        return IsolatedSandbox(policy, observers=observers, config=config)
    choices = "|".join(ISOLATION_MODES)
    raise UsageError(f"--isolate {isolate!r}: unknown isolation (choose {choices})")
