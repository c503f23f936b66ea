"""`SandboxLike`: what the in-process and the isolated sandbox have in common.

Like httpx's transports, both sandboxes answer the same calls, so a caller picks one
(see `make_sandbox`) and writes the rest of its code once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..invocation import Invocation
    from ..observe import RunObserver
    from ..policy import Policy
    from ..result import Result

__all__ = ["SandboxLike"]


class SandboxLike(Protocol):
    """Runs modules under `policy`; a resource owner (`close()`, `with`)."""

    policy: Policy
    observers: tuple[RunObserver, ...]

    def run(self, module: str | Path | bytes, invocation: Invocation | None = None) -> Result:
        """Run the module once and report what happened."""
        ...

    def close(self) -> None:
        """Release the sandbox's resources. Safe to call twice."""
        ...

    @property
    def closed(self) -> bool:
        """Whether `close` was called (runs then raise UsageError)."""
        ...

    def __enter__(self) -> SandboxLike: ...

    def __exit__(self, *exc: object) -> None: ...
