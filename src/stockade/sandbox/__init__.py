"""The in-process sandbox: `Sandbox(policy).run(module, invocation) -> Result`."""

from __future__ import annotations

from .sandbox import Sandbox

__all__ = ["Sandbox"]
