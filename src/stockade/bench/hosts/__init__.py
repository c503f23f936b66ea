"""Backend hosts: the code that runs and times guests inside an agent process.

Hosts are imported by name only inside the agent, so a missing optional dependency
(Extism, node) only disables its own backend.
"""

from __future__ import annotations

from .base import Host, HostUnavailable, Layout, Request, Sample

__all__ = ["Host", "HostUnavailable", "Layout", "Request", "Sample", "HOSTS"]

# host name -> (module under stockade.bench.hosts, class name)
HOSTS: dict[str, tuple[str, str]] = {
    "command": ("commands", "CommandHost"),
    "container": ("container", "ContainerHost"),
    "stockade": ("wasm", "StockadeHost"),
    "stockade-fast": ("wasm", "StockadeFastHost"),
    "wasmtime": ("wasm", "WasmtimeHost"),
    "extism": ("extism_host", "ExtismHost"),
    "node": ("node", "NodeHost"),
    "vm": ("vm", "VmHost"),
}
