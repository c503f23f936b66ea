"""The decision tree as one data table.

`RULES` is read top to bottom: the first `choose` rule whose conditions all hold gives
the platform; then every `harden` rule that holds for that platform adds its change
(hostile code under Wasm gets the hardened worker, hostile code in a container gets a
microVM around it). The seed's tree is the four rules marked `seed`, in its order:
full OS or complex dependencies -> VM; cold start under 50 ms -> WebAssembly; I/O heavy
-> containers; otherwise a hybrid. The other rules answer questions the tree does not
ask (GPUs, sockets, languages without a WASI toolchain, density, a module that already
runs) and are placed so that a workload described only by the seed's questions gets the
seed's answer, and one that needs a full OS always gets a VM (whatever else it needs).

A condition is `(question, operator, value)` on `Needs` (or on the module's facts for
questions starting with `module.`); reasons are templates whose `{figure.key}` fields
are filled from `Figures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .needs import Needs

__all__ = ["Rule", "RULES", "Condition", "holds", "PLATFORMS", "HYBRID_LAYERS"]

Condition = tuple[str, str, Any]

PLATFORMS = {
    "vm": "a virtual machine (microVM)",
    "wasm": "WebAssembly under Stockade",
    "container": "a container",
    "hybrid": "a hybrid deployment",
}

# The seed's hybrid architecture: layer -> (platform, OTLP profile of that layer).
HYBRID_LAYERS: dict[str, tuple[str, str]] = {
    "api": ("wasm", "edge"),
    "business": ("container", "cloud"),
    "data": ("vm or container", "on-prem"),
}


@dataclass(frozen=True)
class Rule:
    """One row: when `conditions` all hold, `stage` "choose" picks `platform`; stage
    "harden" (applies to `platform` when already chosen) adds `change`."""

    id: str
    stage: str
    conditions: tuple[Condition, ...]
    platform: str
    reason: str
    cites: tuple[str, ...] = ()
    change: str = ""
    seed: bool = False


RULES: tuple[Rule, ...] = (
    Rule("seed-full-os", "choose", (("full_os", "is", True),), "vm",
         "It needs a full OS or kernel features: only a VM gives it its own kernel. A "
         "microVM boots in {vm.boot_ms} ({vm.boot_ms.source}); Edera's near-container VMs "
         "measured {edera.cpu_pct} CPU and up to {edera.memory_pct} memory against Docker.",
         cites=("vm.boot_ms", "edera.cpu_pct", "edera.memory_pct"), seed=True),
    Rule("seed-complex-deps", "choose", (("dependencies", "is", "complex"),), "vm",
         "Its dependencies need a whole system (packages, services, kernel modules): a VM "
         "holds them with its own kernel; a microVM boots in {vm.boot_ms}.",
         cites=("vm.boot_ms",), seed=True),
    # Below the full-OS rules: a container gives no OS of its own, so a workload that
    # needs one and a GPU gets a VM with the GPU passed through (rule gpu-vm).
    Rule("gpu", "choose", (("gpu", "is", True),), "container",
         "WASI gives guests no GPU: run GPU work in a container with the device plugin "
         "(or a VM with the device passed through)."),
    Rule("sockets", "choose", (("network", "is", "complex"),), "container",
         "It opens its own sockets (several ports or protocols): WASI preview 1 cannot, "
         "and Stockade refuses WASIX sockets; a container has a network namespace of its "
         "own. Container start-up: {container.startup_ms}."),
    Rule("no-toolchain", "choose", (("language_support", "is", "poor"),), "container",
         "Its language has no production WASI toolchain: a container runs its usual "
         "runtime as it is."),
    # The budget itself is compared with the start-up of the form recommended (and of
    # the others) by `advice._budget`, for every platform: the seed's 50 ms decides the
    # platform, the measured figures decide whether it meets the workload's budget.
    Rule("seed-cold-start", "choose", (("startup_budget_ms", "lt", 50),), "wasm",
         "A cold start under {wasm.cold_budget_ms} calls for WebAssembly (the seed's tree): "
         "an instance in a running host needs no process, kernel or image of its own.",
         cites=("wasm.cold_budget_ms",), seed=True),
    Rule("seed-io-heavy", "choose", (("io", "is", "heavy"),), "container",
         "It is I/O-heavy: {io_cost}; a container's program calls the kernel directly.",
         cites=("wasm.io_ratio",), seed=True),
    Rule("density", "choose", (("density", "ge", 1000),), "wasm",
         "{density} instances per host: a Wasm instance costs kilobytes of host memory and "
         "{wasm.warm_ms} to start, where each microVM adds {vm.overhead_mib} and a "
         "container a process tree.",
         cites=("wasm.warm_ms", "vm.overhead_mib")),
    Rule("module-runs", "choose", (("module.runs_as_is", "is", True),), "wasm",
         "The module imports only what Stockade provides (WASI preview 1), so it runs as it "
         "is, at {wasm.compute_ratio} of native compute time, starting in {wasm.warm_ms}.",
         cites=("wasm.compute_ratio", "wasm.warm_ms")),
    Rule("seed-hybrid", "choose", (), "hybrid",
         "No single constraint decides: split by layer as the seed's hybrid architecture "
         "does: the API layer on Wasm (fast start, {wasm.warm_ms} per instance), the "
         "business layer in containers, the data layer on VMs or containers.",
         cites=("wasm.warm_ms",), seed=True),
    Rule("hostile-wasm", "harden", (("isolation", "is", "hostile"),), "wasm",
         "Wasm's own limits do not bound what a guest pushes into the kernel "
         "({wasm.kernel_attacks} of resource attacks, {wasm.kernel_attacks.source}): run "
         "hostile code in Stockade's hardened worker (profile strict, process isolation, "
         "cgroups, seccomp), and put a VM around the host for the strongest boundary.",
         cites=("wasm.kernel_attacks",),
         change="profile strict with process isolation; a VM around the host"),
    Rule("hostile-container", "harden", (("isolation", "is", "hostile"),), "container",
         "Containers share the host kernel with hostile code: run them in microVMs "
         "(boot {vm.boot_ms}, {vm.overhead_mib} each) or a user-space kernel.",
         cites=("vm.boot_ms", "vm.overhead_mib"), change="run the containers in microVMs"),
    Rule("gpu-vm", "harden", (("gpu", "is", True),), "vm",
         "It needs a GPU too: WASI gives guests none, and a container no OS of its own; give "
         "the VM the device by PCI passthrough (VFIO, e.g. QEMU or Cloud Hypervisor).",
         change="GPU passthrough (VFIO) to the VM"),
    Rule("interpreted", "harden", (("language_support", "is", "interpreter"),), "wasm",
         "Its language runs as an interpreter compiled to Wasm (CPython, QuickJS): pure "
         "code only, no native extensions. CPython for WASI prints 1 in {python.warm_ms} "
         "as a fresh instance in a running host and {python.cold_ms} as a new `stockade "
         "run` process, where native CPython takes {python.native_ms}.",
         cites=("python.warm_ms", "python.cold_ms", "python.native_ms"),
         change="interpreter module; no native extensions"),
)


def _value(needs: Needs, question: str) -> Any:
    if question.startswith("module."):
        return None if needs.module is None else getattr(needs.module, question[7:])
    return getattr(needs, question)


def holds(condition: Condition, needs: Needs) -> bool:
    """Whether one condition holds for `needs` (an unanswered question never holds)."""
    question, operator, expected = condition
    value = _value(needs, question)
    if value is None:
        return False
    if operator == "is":
        return bool(value == expected)
    if operator == "lt":
        return bool(value < expected)
    if operator == "ge":
        return bool(value >= expected)
    raise ValueError(f"unknown operator {operator!r} in the rule table")
