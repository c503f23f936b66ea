"""Findings of a static inspection, ranked by risk.

`high`: the module cannot run under Stockade as it is, or hides something (denied
imports, an unreadable signature or one over other bytes, memory or data no profile
admits). `medium`: it can run
but deserves a look before it does (unbounded or huge memory, a start function, large
compile cost, filesystem access). `low`: facts a reviewer should know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine.guard import COMPILE_HEAVY
from ..policy.profiles import PROFILES
from ..policy.units import format_size
from ..trust.signing import shown_ids

if TYPE_CHECKING:
    from .report import Finding, Inspection

__all__ = ["assess"]

_FOUR_GIB = 4 * 1024**3
_FAMILIES = (("wasix", "WASIX"), ("wasi:sockets", "WASI sockets"), ("wasi", "wasi-threads"))


def _family(qualified: str) -> str:
    for prefix, label in _FAMILIES:
        if qualified.startswith(prefix):
            return label
    return qualified.split(".", 1)[0]


def assess(report: Inspection) -> list[Finding]:
    """Every finding about `report`, highest risk first."""
    from .report import RISKS, Finding

    found: list[Finding] = []

    def add(risk: str, message: str) -> None:
        found.append(Finding(risk, message))

    strict, default = PROFILES["strict"], PROFILES["default"]
    families: dict[str, list[str]] = {}
    for name, _ in report.capabilities.denied:
        families.setdefault(_family(name), []).append(name)
    for family, names in families.items():
        uses_sockets = any("sock" in n for n in names)
        what = f"{family} sockets" if uses_sockets and family == "WASIX" else family
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        add("high", f"imports {what} ({shown}): denied, the module will not run")
    if report.gc_heap:
        add("high", "uses Wasm GC or exception handling: refused unless the policy "
                    "allows them (wasm_gc = true, --wasm-gc), which gives its GC heap and "
                    "its linear memory half of max_memory each")
    if report.signature_error:
        add("high", f"signature section unreadable: {report.signature_error}")
    if report.signatures_invalid:
        invalid = report.signatures_invalid
        ids = shown_ids(dict.fromkeys(s["key_id"] for s in invalid))
        add("high", f"{len(invalid)} signature(s) over other bytes than this module's (key "
                    f"id(s) {ids}): not this module's signature, forged or from another "
                    "build; no key verifies them")
    data = report.data_bytes
    for limits, _ in report.memories:
        page = limits.page_size
        initial = limits.minimum * page
        if initial > default.max_memory:
            add("high", f"initial memory of {format_size(initial)} is over the default "
                        f"memory limit of {format_size(default.max_memory)}")
        elif initial > strict.max_memory:
            add("medium", f"initial memory of {format_size(initial)} is over the strict "
                          f"memory limit of {format_size(strict.max_memory)}")
        if limits.maximum is None:
            add("low", "declares no maximum memory: only the policy bounds its growth")
        elif limits.maximum * page >= _FOUR_GIB:
            add("medium", f"declares {format_size(limits.maximum * page)} max memory")
        if limits.shared:
            add("medium", "declares a shared memory (threads)")
        if limits.is64:
            add("medium", "declares a 64-bit memory")
    if data > default.max_memory:
        add("high", f"data segments of {format_size(data)}: larger than the default memory "
                    f"limit of {format_size(default.max_memory)}")
    elif data > strict.max_memory:
        add("medium", f"data segments of {format_size(data)}: larger than the strict memory "
                      f"limit of {format_size(strict.max_memory)}")
    if report.start is not None:
        add("medium", f"start function {report.start} runs at instantiation, before _start")
    largest = report.largest_bodies()
    if largest and largest[0][1] > strict.max_function_size:
        index, size, _ = largest[0]
        add("medium", f"function {index} has a {format_size(size)} body, over the strict "
                      f"limit of {format_size(strict.max_function_size)} (compile cost)")
    heavy = [i for i, (_, n) in enumerate(report.bodies) if n > strict.max_locals]
    if heavy:
        add("medium", f"{len(heavy)} function(s) declare more than {strict.max_locals} locals "
                      "(compile cost)")
    if report.compile_cost > COMPILE_HEAVY:
        add("medium", f"compiling it costs about {report.compile_cost:.1f} s of CPU, over the "
                      f"{COMPILE_HEAVY:.0f} s a compile should take")
    caps = report.capabilities
    if caps.uses("filesystem"):
        add("medium", "imports filesystem calls: it needs directory grants to use them")
    if caps.uses("sockets"):
        add("low", "imports WASI preview 1 sockets: they fail with EBADF (none are handed over)")
    if caps.uses("args/env"):
        add("low", "reads arguments or environment: only allow-listed variables are passed")
    if caps.uses("random"):
        add("low", "reads host entropy (random_get)")
    if not report.signatures:
        add("low", "not signed")
    for error in report.custom_errors:
        add("low", f"malformed custom section ignored: {error}")
    if not any(e.name == "_start" and e.kind == "func" for e in report.exports):
        add("low", "exports no _start: not a WASI command")
    return sorted(found, key=lambda f: RISKS.index(f.risk))
