"""What a worker is protected by: `Protection` records and the report `stockade doctor` prints.

Each protection is applied by the worker itself at start-up (see `worker`) and reported
back as active, or unavailable with the reason, so a report always describes a real
worker on this machine rather than a guess.
"""

from __future__ import annotations

from ..records import FieldTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..policy import Policy
    from .config import IsolationConfig

__all__ = ["Protection", "protections", "format_protections"]


class Protection(FieldTuple):
    """One protection of a worker: `name`, whether it is `active`, and a `detail` that
    gives the figures when active or the reason when not."""

    name: str
    active: bool
    detail: str


def protections(policy: Policy | None = None,
                config: IsolationConfig | None = None) -> list[Protection]:
    """Start a worker for `policy` (default: the `strict` profile), and return the
    protections it applied, each active or unavailable with the reason.

    Takes about a tenth of a second (a fresh interpreter). Raises WorkerError when no
    worker can be started at all.
    """
    from ..policy import Policy
    from .process import IsolatedSandbox

    chosen = policy if policy is not None else Policy.from_profile("strict")
    with IsolatedSandbox(chosen, config=config) as sandbox:
        return sandbox.protections()


def format_protections(items: list[Protection]) -> str:
    """Plain-text lines, one per protection: `name  active|unavailable  detail`."""
    width = max((len(item.name) for item in items), default=0)
    lines = []
    for item in items:
        state = "active" if item.active else "unavailable"
        lines.append(f"{item.name:<{width}}  {state:<11}  {item.detail}")
    return "\n".join(lines)
