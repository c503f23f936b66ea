"""Which engine backend runs a module: the C API or wasmtime-py, decided here.

The C-API backend (`CapiSandbox`, through `stockade.engine.fastpath`) starts without
importing wasmtime-py, so `stockade run` costs a fraction of `import wasmtime`. It
serves metered runs too (granted and scratch directories with their quotas, per-call
caps, the host-call budget: `FastEngine.run_metered`), in this process and in an
isolated worker alike (`stockade.isolate`: the worker wraps whichever backend
`worker_backend` names). `capi_refusal` names what is left for wasmtime-py's `Sandbox`.

`STOCKADE_BACKEND` overrides the choice: `auto` (default), `wasmtime` (always
wasmtime-py), `capi` (the C API; a run it cannot serve is a usage error naming why).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FastPathUnavailable, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    from ..policy import Policy

__all__ = ["BACKENDS", "ENV_VAR", "Backend", "capi_refusal", "policy_refusal", "use_capi",
           "worker_backend"]

BACKENDS = ("auto", "capi", "wasmtime")
ENV_VAR = "STOCKADE_BACKEND"
if TYPE_CHECKING:
    Backend = Literal["capi", "wasmtime"]
else:
    Backend = str
# What a FastEngine's pool can be built with (FastEngine refuses more).
_MAX_MEMORY = 4 * 1024**3
_MAX_TABLE_ELEMENTS = 10_000_000


def policy_refusal(policy: Policy) -> str | None:
    """Why the C-API backend cannot run any module under `policy`, or None when it can
    (whatever the module). The policy half of `capi_refusal`."""
    limits = policy.limits
    if limits.max_memory > _MAX_MEMORY or limits.max_table_elements > _MAX_TABLE_ELEMENTS:
        return "the memory or table limit is above what the C-API pool holds"
    if limits.max_memories > 1:
        return "the policy allows several memories per module (the pool holds one)"
    try:
        from ..engine.fastpath import FastEngine  # noqa: F401 - pinned to one wasmtime
    except FastPathUnavailable as exc:
        return exc.message
    return None


def capi_refusal(policy: Policy, module: Path) -> str | None:
    """Why the C-API backend cannot run `module` under `policy`, or None when it can.
    The one place this is decided (an isolated worker asks `policy_refusal` once and
    this per module, in its parent)."""
    if module.suffix == ".cwasm":
        return "a .cwasm module (native code is mapped on the C API only from the AoT cache)"
    return policy_refusal(policy)


def _choice() -> str:
    choice = os.environ.get(ENV_VAR, "auto") or "auto"
    if choice not in BACKENDS:
        raise UsageError(f"{ENV_VAR}={choice!r}: unknown backend (choose {'|'.join(BACKENDS)})")
    return choice


def _decide(reason: str | None) -> bool:
    choice = _choice()
    if choice == "wasmtime":
        return False
    if reason is not None and choice == "capi":
        raise UsageError(f"{ENV_VAR}=capi: the C-API backend cannot run this: {reason}")
    return reason is None


def use_capi(policy: Policy, module: Path, isolate: str = "none") -> bool:
    """Whether `module` runs on the C-API backend, in this process (`isolate` is `none`)
    or in an isolated worker (any other mode): when `capi_refusal` finds nothing and
    `STOCKADE_BACKEND` allows it. Raises UsageError for an unknown `STOCKADE_BACKEND`,
    or `capi` forced where it cannot serve."""
    del isolate  # both places run the same backends; kept for the callers' wording
    return _decide(capi_refusal(policy, module))


def worker_backend(policy: Policy) -> Backend:
    """The backend an isolated worker for `policy` runs (chosen by its parent, before
    the worker confines itself: it imports only that one). A module it cannot load on
    the C API (a `.cwasm`, or one the C-API loader leaves to wasmtime-py for its
    wording) goes to a wasmtime-py worker. Raises UsageError as `use_capi` does."""
    return "capi" if _decide(policy_refusal(policy)) else "wasmtime"
