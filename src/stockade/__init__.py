"""Stockade: run untrusted WebAssembly under limits that hold, and see what it did.

    >>> from stockade import Sandbox, Policy, Invocation
    >>> with Sandbox(Policy.from_profile("strict")) as sandbox:
    ...     result = sandbox.run("hello.wasm", Invocation(args=("world",)))
    >>> result.outcome, result.stdout

Names are imported from their modules on first use: `import stockade.cli` (every
`stockade` command) must not pay for wasmtime-py, which the in-process sandbox needs.
"""

from __future__ import annotations

from .lazyexports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .errors import (
        DeniedImport,
        ModuleError,
        ModuleNotFound,
        PolicyError,
        PoolBusy,
        StockadeError,
        UntrustedModule,
        UsageError,
        WorkerError,
    )
    from .invocation import Invocation
    from .isolate.pool import SandboxPool
    from .policy import Capabilities, DirGrant, Limits, Policy, Trust, load_policy
    from .result import Outcome, Result, Usage
    from .sandbox import Sandbox
    from .sandbox.aio import AsyncSandbox

__all__ = [
    "Sandbox",
    "AsyncSandbox",
    "SandboxPool",
    "Policy",
    "Trust",
    "Limits",
    "Capabilities",
    "DirGrant",
    "load_policy",
    "Invocation",
    "Result",
    "Outcome",
    "Usage",
    "StockadeError",
    "UsageError",
    "PolicyError",
    "ModuleNotFound",
    "ModuleError",
    "DeniedImport",
    "UntrustedModule",
    "WorkerError",
    "PoolBusy",
]
__version__ = "0.1.0"

# public name -> the module defining it
_EXPORTS = {
    "Sandbox": "sandbox", "AsyncSandbox": "sandbox.aio", "SandboxPool": "isolate.pool",
    **dict.fromkeys(("Policy", "Trust", "Limits", "Capabilities", "DirGrant", "load_policy"),
                    "policy"),
    "Invocation": "invocation",
    **dict.fromkeys(("Result", "Outcome", "Usage"), "result"),
    **dict.fromkeys(("StockadeError", "UsageError", "PolicyError", "ModuleNotFound",
                     "ModuleError", "DeniedImport", "UntrustedModule", "WorkerError",
                     "PoolBusy"), "errors"),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
