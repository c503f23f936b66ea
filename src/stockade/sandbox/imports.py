"""Refuse modules that import anything Stockade does not provide, before they run."""

from __future__ import annotations

import wasmtime

from ..hostcalls import MODULE, PREVIEW1_FUNCTIONS

__all__ = ["denied_import", "import_refusal"]

_HINTS = {
    "wasix": "WASIX calls (sockets, threads, processes) are not provided",
    "wasi": "wasi-threads is not provided",
    "env": "the host provides no 'env' imports",
}


def denied_import(module: wasmtime.Module) -> tuple[str, str] | None:
    """The first import Stockade refuses, as (`module.name`, reason), or None.

    WASI preview 1 functions are provided whole (the `sock_*` calls included: they act
    only on sockets the host hands over, and none are handed over). Anything else —
    WASIX sockets, wasi-threads `thread-spawn`, shared memories, unknown modules — is
    refused so the guest never starts half-linked.
    """
    # Functions first: "wasi.thread-spawn" explains more than the shared memory it needs.
    imports = sorted(module.imports, key=lambda i: not isinstance(i.type, wasmtime.FuncType))
    for item in imports:
        reason = import_refusal(item.module, item.name or "",
                                isinstance(item.type, wasmtime.FuncType))
        if reason is not None:
            return f"{item.module}.{item.name}", reason
    return None


def import_refusal(module: str, name: str, is_function: bool) -> str | None:
    """Why Stockade refuses the import `module.name`, or None when it provides it (the one
    rule behind run-time refusals and `stockade inspect`)."""
    if module == MODULE and name in PREVIEW1_FUNCTIONS and is_function:
        return None
    if module == MODULE:
        return f"{name!r} is not a WASI preview 1 function"
    prefix = module.split("_")[0]
    return _HINTS.get(prefix, f"no host module {module!r} is provided")
