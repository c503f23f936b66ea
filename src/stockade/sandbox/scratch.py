"""`Scratch`: a fresh writable directory per run, removed afterwards unless kept."""

from __future__ import annotations

from pathlib import Path

from ..policy import Capabilities, DirGrant
from ..rmtree import remove_tree

__all__ = ["Scratch", "SCRATCH_PREFIX"]

# How scratch directories are named in the temporary directory (the isolated sandbox
# removes a killed worker's scratch directory only when it is named so).
SCRATCH_PREFIX = "stockade-scratch-"


class Scratch:
    """Context manager creating the run's scratch directory when the policy asks for one.

    Untrusted guests write here rather than into a directory that outlives them; the
    disk and file quotas apply as to any writable preopen. `kept` is the host path when
    the directory is kept for inspection. Removal works at any depth the guest nested
    directories to; when something cannot be removed, `failure` says what and where
    (the run goes on: the caller puts it in the `Result` and the audit log).
    """

    def __init__(self, capabilities: Capabilities) -> None:
        self._guest = capabilities.scratch
        self._keep = capabilities.keep_scratch
        self.grant: DirGrant | None = None
        self.kept: str | None = None
        self.failure: str | None = None

    def __enter__(self) -> Scratch:
        if self._guest is not None:
            import tempfile  # only runs with a scratch dir pay for it

            host = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
            self.grant = DirGrant(host=host, guest=self._guest, writable=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.grant is None:
            return
        if self._keep:
            self.kept = str(self.grant.host)
        else:
            self.failure = remove_tree(self.grant.host)
