"""The workloads: the same guest sources for every backend, at the sizes a plan asks for.

Groups: `startup` (hello: start-up and per-call overhead), `compute` (FNV-1a, SHA-256,
sieve, quicksort), `io` (echo of 1 KiB..16 MiB through stdin/stdout), `micro` (the Edera
microbenchmarks: CPU loop, clock and syscall-bound loops, memcpy bandwidth) and `real`
(CPython 3.12 for WASI running ``print(1)``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .hosts.base import Request

__all__ = ["Workload", "GROUPS", "KERNELS", "format_bytes", "write_payload"]

GROUPS = ("startup", "compute", "io", "micro", "real")
KERNELS = ("fnv", "sha256", "sieve", "qsort")


def format_bytes(size: float) -> str:
    """`1024` -> `1 KiB`, `16777216` -> `16 MiB` (binary units, no decimals when exact)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            text = f"{size:.0f}" if float(size).is_integer() else f"{size:.1f}"
            return f"{text} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@dataclass(frozen=True)
class Workload:
    """One thing to run: `key` names it in results (e.g. `compute/sha256/medium`).

    `payload` is the stdin size in bytes (0: empty stdin); `size` is the work size the
    guest reports (bytes, elements or iterations); `variant` is the size class.
    """

    key: str
    group: str
    guest: str
    args: tuple[str, ...] = ()
    payload: int = 0
    kernel: str = ""
    variant: str = ""
    size: int = 0

    @property
    def label(self) -> str:
        """Short human label for tables and charts."""
        if self.group == "io":
            return f"echo {format_bytes(self.payload)}"
        if self.group == "startup":
            return "hello"
        if self.group == "real":
            return "CPython print(1)"
        return f"{self.kernel} {self.variant}".strip()

    def request(self, payload_dir: Path | None) -> Request:
        """The request agents receive (payload file path when stdin is not empty)."""
        stdin = None
        if self.payload and payload_dir is not None:
            stdin = str(payload_dir / payload_name(self.payload))
        return Request(guest=self.guest, args=self.args, stdin=stdin)

    def to_dict(self) -> dict[str, object]:
        """Plain data for results.json."""
        return {"key": self.key, "group": self.group, "guest": self.guest,
                "args": list(self.args), "payload": self.payload, "kernel": self.kernel,
                "variant": self.variant, "size": self.size, "label": self.label}


def payload_name(size: int) -> str:
    """File name of the deterministic payload of `size` bytes."""
    return f"payload-{size}.bin"


def write_payload(directory: Path, size: int) -> Path:
    """Write a deterministic pseudo-random payload of `size` bytes (seeded by its size)."""
    path = directory / payload_name(size)
    if not path.exists() or path.stat().st_size != size:
        path.write_bytes(random.Random(size).randbytes(size))
    return path
