"""Worker isolation: run sandboxes in a hardened worker process behind the same interface.

`IsolatedSandbox(policy).run(module, invocation) -> Result` works like the in-process
`Sandbox`; the worker adds rlimits, a cgroup, a seccomp filter, a private network
namespace and dropped capabilities (`protections()` reports which are active here).
`make_sandbox(policy, "process" | "none")` lets callers choose without changing code.

The worker machinery is imported on first use, so choosing `none` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import SandboxLike
from .config import IsolationConfig
from .factory import ISOLATION_MODES, default_isolation, make_sandbox
from .protections import Protection, format_protections, protections

if TYPE_CHECKING:
    from .process import IsolatedSandbox

__all__ = [
    "IsolatedSandbox",
    "IsolationConfig",
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
