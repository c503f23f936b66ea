"""Which engine backend runs an in-process module: the C API or wasmtime-py, decided here.

The C-API backend (`CapiSandbox`, through `stockade.engine.fastpath`) starts without
importing wasmtime-py, so `stockade run` costs a fraction of `import wasmtime`. It
serves metered runs too (granted and scratch directories with their quotas, per-call
caps, the host-call budget: `FastEngine.run_metered`). `capi_refusal` names what is
left for wasmtime-py's `Sandbox`.

`STOCKADE_BACKEND` overrides the choice: `auto` (default), `wasmtime` (always
wasmtime-py), `capi` (the C API; a run it cannot serve is a usage error naming why).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FastPathUnavailable, UsageError

if TYPE_CHECKING:
    from ..policy import Policy

__all__ = ["BACKENDS", "ENV_VAR", "capi_refusal", "use_capi"]

BACKENDS = ("auto", "capi", "wasmtime")
ENV_VAR = "STOCKADE_BACKEND"
# What a FastEngine's pool can be built with (FastEngine refuses more).
_MAX_MEMORY = 4 * 1024**3
_MAX_TABLE_ELEMENTS = 10_000_000


def capi_refusal(policy: Policy, module: Path) -> str | None:
    """Why the C-API backend cannot run `module` under `policy` in this process, or None
    when it can. The one place this is decided."""
    limits = policy.limits
    if module.suffix == ".cwasm":
        return "a .cwasm module (native code is mapped on the C API only from the AoT cache)"
    if limits.max_memory > _MAX_MEMORY or limits.max_table_elements > _MAX_TABLE_ELEMENTS:
        return "the memory or table limit is above what the C-API pool holds"
    if limits.max_memories > 1:
        return "the policy allows several memories per module (the pool holds one)"
    try:
        from ..engine.fastpath import FastEngine  # noqa: F401 - pinned to one wasmtime
    except FastPathUnavailable as exc:
        return exc.message
    return None


def use_capi(policy: Policy, module: Path, isolate: str) -> bool:
    """Whether to run on the C-API backend: in this process (`isolate` is `none`), when
    `capi_refusal` finds nothing and `STOCKADE_BACKEND` allows it. Raises UsageError for
    an unknown `STOCKADE_BACKEND`, or `capi` forced where it cannot serve."""
    choice = os.environ.get(ENV_VAR, "auto") or "auto"
    if choice not in BACKENDS:
        raise UsageError(f"{ENV_VAR}={choice!r}: unknown backend (choose {'|'.join(BACKENDS)})")
    if choice == "wasmtime":
        return False
    reason = "an isolated worker runs wasmtime-py" if isolate != "none" else \
        capi_refusal(policy, module)
    if reason is not None and choice == "capi":
        raise UsageError(f"{ENV_VAR}=capi: the C-API backend cannot run this: {reason}")
    return reason is None
