"""The least-privilege policy of an inspected module, as policy TOML.

It starts from the strict profile and grants only what the module imports: no directory
unless it imports filesystem calls (and then only a commented example to fill in), no
environment unless it reads it, and limits raised above strict only where the module
could not load otherwise (memory it declares, body sizes, compile cost).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..display import printable
from ..policy.profiles import PROFILES
from ..policy.units import format_size
from ..trust.signing import shown_ids

if TYPE_CHECKING:
    from .report import Inspection

__all__ = ["least_privilege_policy"]

MiB = 1024**2


def _round_mib(size: int) -> int:
    """`size` rounded up to a power of two of MiB."""
    mib = max(1, math.ceil(size / MiB))
    return (1 << (mib - 1).bit_length()) * MiB


def least_privilege_policy(report: Inspection) -> str:
    """Policy TOML that lets the module run with no more than it imports."""
    strict = PROFILES["strict"]
    limits: list[str] = []
    initial = max((m.minimum * m.page_size for m, _ in report.memories), default=0)
    memory = max(strict.max_memory, _round_mib(2 * initial), _round_mib(report.data_bytes))
    declared = [m.maximum * m.page_size for m, _ in report.memories if m.maximum is not None]
    if declared and initial <= min(declared) < memory:
        memory = max(strict.max_memory, min(declared))
    limits.append(f'max_memory = "{format_size(memory)}"  # initial memory '
                  f"{format_size(initial)}")
    if report.gc_heap:
        limits.append("wasm_gc = true  # Wasm GC or exception handling: half of max_memory "
                      "each for its GC heap and its linear memory")
    cost = report.compile_cost
    timeout = max(strict.timeout or 30.0, math.ceil(cost))
    limits.append(f'timeout = "{timeout:.0f}s"  # compile cost about {cost:.1f} s of CPU')
    if report.size > strict.max_module_size:
        limits.append(f'max_module_size = "{format_size(_round_mib(report.size))}"')
    largest = max((size for size, _ in report.bodies), default=0)
    if largest > strict.max_function_size:
        limits.append(f'max_function_size = "{format_size(_round_mib(largest))}"')
    most_locals = max((n for _, n in report.bodies), default=0)
    if most_locals > strict.max_locals:
        limits.append(f"max_locals = {most_locals}")

    caps = report.capabilities
    lines = [
        f"# Least-privilege policy for {printable(report.name)} (sha256 {report.sha256[:16]}…),",
        "# written by `stockade inspect --policy`: it grants only what the module imports.",
        'profile = "strict"',
        "",
        "[limits]",
        *limits,
        "",
        "[capabilities]",
    ]
    if caps.uses("filesystem"):
        # Names come from the module and its file: escaped, as in every human output (a
        # raw newline or escape sequence in a comment rewrites the terminal or the TOML).
        calls = printable(", ".join(name.split(".", 1)[1]
                                    for name in caps.groups["filesystem"][:4]))
        lines += [f"# It imports filesystem calls ({calls}, …): grant only the directories",
                  "# it needs, read-only unless it must write, e.g.",
                  '# dirs = ["/srv/data:/data:ro"]', "dirs = []"]
    else:
        lines += ["# It imports no filesystem calls: no directories.", "dirs = []"]
    if caps.uses("args/env") and any("environ" in n for n in caps.groups["args/env"]):
        lines += ["# It reads its environment: name only the variables it needs.",
                  "env_allow = []"]
    else:
        lines += ["env_allow = []"]
    lines += ["", "[trust]"]
    # Only signatures over this module's bytes (none is verified here: no key is given).
    signers = sorted({s["key_id"] for s in report.signatures if s["key_id"]})
    if signers:
        lines.append(f"# Signed by key id(s) {shown_ids(signers)}: "
                     "list their public keys.")
    lines += ["require_signature = false  # true, with keys, once the module is signed",
              "keys = []"]
    if caps.denied:
        lines += ["", "# It imports what Stockade refuses (no policy grants these):"]
        lines += [f"#   {printable(name)}: {printable(why)}" for name, why in caps.denied[:20]]
    return "\n".join(lines) + "\n"
