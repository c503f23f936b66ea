"""Worker isolation: run sandboxes in a hardened worker process behind the same interface.

`IsolatedSandbox(policy).run(module, invocation) -> Result` works like the in-process
`Sandbox`; the worker adds rlimits, a cgroup, private network and mount namespaces, a
uid of its own with no capabilities, Landlock and an allow-list seccomp filter
(`protections()` reports which are active here). `confine_current_process(Grants(...))`
applies the same confinement to any other process.
`make_sandbox(policy, "process" | "none")` lets callers choose without changing code.

The worker machinery is imported on first use, so choosing `none` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import SandboxLike
from .config import IsolationConfig
from .confine import Confinement, Grants, confine_current_process
from .factory import ISOLATION_MODES, default_isolation, make_sandbox
from .protections import Protection, format_protections, protections

if TYPE_CHECKING:
    from .process import IsolatedSandbox

__all__ = [
    "IsolatedSandbox",
    "IsolationConfig",
    "Grants",
    "Confinement",
    "confine_current_process",
    "SandboxLike",
    "ISOLATION_MODES",
    "default_isolation",
    "make_sandbox",
    "Protection",
    "protections",
    "format_protections",
]

_LAZY = {"IsolatedSandbox": ".process"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
