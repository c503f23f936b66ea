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

# Eager, and cheap: a name equal to its submodule's would otherwise be shadowed by the
# submodule once something imports `stockade.isolate.protections`.
from ..lazyexports import lazy_exports
from .protections import Protection, format_protections, protections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import SandboxLike
    from .config import IsolationConfig
    from .confine import Confinement, Grants, confine_current_process
    from .factory import ISOLATION_MODES, default_isolation, make_sandbox
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

# public name -> the module defining it (imported on first use: `stockade run` in this
# process needs `factory` alone, not the confinement machinery)
_LAZY = {
    "IsolatedSandbox": "process", "IsolationConfig": "config", "Grants": "confine",
    "Confinement": "confine", "confine_current_process": "confine", "SandboxLike": "base",
    "ISOLATION_MODES": "factory", "default_isolation": "factory", "make_sandbox": "factory",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
