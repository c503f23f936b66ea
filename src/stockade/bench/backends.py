"""The backends compared, and why one is skipped on this machine.

A `Backend` says which host runs it (inside an agent process), which workload groups it
takes, and its cost class per group (see `plan`). `catalogue()` lists them all;
`precheck()` gives the cheap reason to skip one before its agent starts (the agent may
still refuse, with its own reason).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hosts.extism_host import EXTISM_ENV

__all__ = ["Backend", "Context", "catalogue", "precheck", "BACKEND_NAMES"]

ALL_GROUPS = frozenset({"startup", "compute", "io", "micro", "real"})


@dataclass(frozen=True)
class Context:
    """Machine facts the catalogue needs: executables and the work directory."""

    workdir: Path
    cache_dir: Path
    stockade: str | None
    node: str | None
    node_script: Path
    system_python: str | None
    vm_dir: Path = Path("build") / "vm"


@dataclass(frozen=True)
class Backend:
    """One way of running the workloads.

    `kind` is `process` (a new process per request: cold start each time) or `in-process`
    (a long-lived host, a fresh instance per request). `interpreter` backends run only
    the plan's interpreter sizes; `reference` backends run another program (their output
    is not compared).
    """

    name: str
    title: str
    host: str
    kind: str
    groups: frozenset[str]
    cost: str
    costs: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    prefix: tuple[str, ...] = ()
    interpreter: bool = False
    reference: bool = False
    note: str = ""

    def cost_for(self, group: str) -> str:
        """Cost class of this backend on a workload group."""
        return self.costs.get(group, self.cost)


def catalogue(ctx: Context) -> list[Backend]:
    """Every backend, in the order the report lists them."""
    cache = str(ctx.cache_dir)
    heavy = {"compute": "slow", "micro": "slow", "real": "slow"}
    return [
        Backend("native", "native process", "command", "process", ALL_GROUPS, "spawn",
                options={"kind": "native", "python": ctx.system_python},
                note="the same C source built with clang -O2 -static; CPython row: the "
                     "system python3"),
        Backend("crun", "container (crun)", "container", "process",
                ALL_GROUPS - {"real"}, "spawn", prefix=("unshare", "-m"),
                options={"workdir": str(ctx.workdir / "container")},
                note="static binary in an OCI bundle; private mount namespace, "
                     "--cgroup-manager=disabled"),
        Backend("vm", "microVM per request (QEMU microvm)", "vm", "process",
                frozenset({"startup"}), "compile",
                options={"mode": "boot", "workdir": str(ctx.workdir / "vm"),
                         "vm_dir": str(ctx.vm_dir)},
                note=f"Debian's kernel + a busybox initramfs, boot to first output; "
                     f"{_accel_note()}"),
        Backend("vm-warm", "program in a running microVM (QEMU microvm)", "vm", "in-process",
                frozenset({"startup", "compute", "io", "micro"}), "slow",
                options={"mode": "warm", "workdir": str(ctx.workdir / "vm"),
                         "vm_dir": str(ctx.vm_dir)},
                note=f"one VM, requests over its serial console; {_accel_note()}"),
        Backend("stockade", "Stockade in-process (AoT cache, warm)", "stockade",
                "in-process", ALL_GROUPS, "fast", options={"cache_dir": cache},
                note="Sandbox(default profile: deadline by tripwire), module loaded once, "
                     "fresh instance per call"),
        Backend("stockade-isolated", "Stockade isolated worker (C API, warm)", "stockade",
                "process", frozenset({"startup", "compute"}), "fast",
                options={"cache_dir": cache, "isolate": "process"},
                note="IsolatedSandbox(default profile): a hardened C-API worker whose "
                     "process keeps the deadline (no epochs)"),
        Backend("stockade-fast", "Stockade fast path (C API, pooling, warm)", "stockade-fast",
                "in-process", ALL_GROUPS, "fast",
                note="engine.fastpath: the gateway's per-request path, default-profile limits"),
        Backend("stockade-run", "stockade run (AoT cache)", "command", "process",
                frozenset({"startup", "real"}), "slow",
                options={"kind": "stockade-run", "stockade": ctx.stockade, "cache_dir": cache},
                note="a new `stockade run` process per request, .cwasm already cached"),
        Backend("stockade-wasm", "stockade run from .wasm (compile included)", "command",
                "process", frozenset({"startup", "real"}), "compile",
                options={"kind": "stockade-wasm", "stockade": ctx.stockade},
                note="a new process with an empty STOCKADE_CACHE_DIR each time"),
        Backend("wasmtime", "wasmtime-py Cranelift (no limits)", "wasmtime", "in-process",
                ALL_GROUPS, "fast", options={"strategy": "cranelift"},
                note="bare wasmtime-py: no fuel, no epochs, no limits"),
        Backend("pulley", "wasmtime Pulley interpreter", "wasmtime", "in-process",
                ALL_GROUPS, "fast", costs=heavy, options={"strategy": "pulley"},
                interpreter=True, note='wasmtime.Config().target = "pulley64"'),
        Backend("node", "Node.js node:wasi (V8, warm)", "node", "in-process", ALL_GROUPS,
                "fast", options={"node": ctx.node, "script": str(ctx.node_script)},
                note="one node process, module compiled once, fresh WASI instance per call"),
        Backend("node-run", "node per request", "command", "process",
                frozenset({"startup", "real"}), "slow",
                options={"kind": "node-run", "node": ctx.node, "script": str(ctx.node_script)},
                note="a new `node` process per request (compiles the module each time)"),
        Backend("extism", "Extism Python SDK (fresh plugin)", "extism", "in-process",
                frozenset({"startup"}), "fast", env=EXTISM_ENV,
                note="Plugin(CompiledPlugin, wasi=True).call('_start') per request"),
        Backend("extism-reused", "Extism Python SDK (reused plugin)", "extism", "in-process",
                frozenset({"startup"}), "fast", env=EXTISM_ENV, options={"reuse": True},
                note="one Plugin, `_start` called again per request"),
        Backend("python-import", 'python -c "import wasmtime"', "command", "process",
                frozenset({"startup"}), "slow",
                options={"kind": "python-import", "python": sys.executable}, reference=True,
                note="reference: the floor for any Python CLI that runs wasm"),
    ]


BACKEND_NAMES = ("native", "crun", "vm", "vm-warm", "stockade", "stockade-isolated",
                 "stockade-fast", "stockade-run",
                 "stockade-wasm", "wasmtime", "pulley", "node", "node-run", "extism",
                 "extism-reused", "python-import")


def _accel_note() -> str:
    from .hosts.vm import choose_accel

    if choose_accel() == "kvm":
        return "KVM"
    return ("TCG emulation (this host is itself a VM and nested KVM stalls here): figures "
            "are emulation's, not a VM's cost on real hardware")


def precheck(backend: Backend) -> str | None:
    """Why `backend` cannot run here (cheap checks only), or None."""
    options = backend.options
    if backend.name in ("stockade-run", "stockade-wasm") and not options.get("stockade"):
        return "the stockade command is not on PATH (pip install -e .)"
    if backend.name.startswith("node") and not options.get("node"):
        return "node is not installed (apt-get install nodejs)"
    if backend.name == "crun":
        for tool in ("crun", "unshare"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
    if backend.host == "vm":
        if shutil.which("qemu-system-x86_64") is None:
            return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        vm_dir = Path(str(options.get("vm_dir")))
        if not (vm_dir / "vmlinuz").exists():
            return f"no VM kernel in {vm_dir} (run: python scripts/fetch_vm.py)"
    if backend.host == "extism" and importlib.util.find_spec("extism") is None:
        return "the Extism Python SDK is not installed (pip install extism)"
    return None
