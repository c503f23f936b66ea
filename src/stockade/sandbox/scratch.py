"""`Scratch`: a fresh writable directory per run, removed afterwards unless kept."""

from __future__ import annotations

from pathlib import Path

from ..policy import Capabilities, DirGrant

__all__ = ["Scratch"]


class Scratch:
    """Context manager creating the run's scratch directory when the policy asks for one.

    Untrusted guests write here rather than into a directory that outlives them; the
    disk and file quotas apply as to any writable preopen. `kept` is the host path when
    the directory is kept for inspection.
    """

    def __init__(self, capabilities: Capabilities) -> None:
        self._guest = capabilities.scratch
        self._keep = capabilities.keep_scratch
        self.grant: DirGrant | None = None
        self.kept: str | None = None

    def __enter__(self) -> Scratch:
        if self._guest is not None:
            import tempfile  # only runs with a scratch dir pay for it

            host = Path(tempfile.mkdtemp(prefix="stockade-scratch-"))
            self.grant = DirGrant(host=host, guest=self._guest, writable=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.grant is None:
            return
        if self._keep:
            self.kept = str(self.grant.host)
        else:
            import shutil

            shutil.rmtree(self.grant.host, ignore_errors=True)
