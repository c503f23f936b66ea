"""The measuring side of a backend: `Request` in, `Sample` out.

A host runs inside an agent process (see `stockade.bench.agent`), never in the process
that draws progress bars, so every backend is timed the same way and memory figures
belong to the backend alone.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..guestio import fingerprint

__all__ = ["Request", "Sample", "Host", "HostUnavailable", "Layout", "finish_sample",
           "scratch_root"]

# Guest output files live in memory where possible: on a disk file system, truncating and
# re-creating the capture files costs milliseconds per call and would swamp the timing.
_MEMORY_FS = "/dev/shm"


def scratch_root() -> str | None:
    """A memory-backed directory for capture files (`/dev/shm`), or None for the default."""
    return _MEMORY_FS if os.path.isdir(_MEMORY_FS) and os.access(_MEMORY_FS, os.W_OK) else None


class HostUnavailable(Exception):
    """A host cannot run on this machine; the message is the reason printed for the skip."""


@dataclass(frozen=True)
class Layout:
    """Where the guest artifacts are: `wasm_dir/<guest>.wasm`, `native_dir/<guest>`, and
    `real_dir/python.wasm` for the CPython guest."""

    wasm_dir: Path
    native_dir: Path
    real_dir: Path

    def wasm(self, guest: str) -> Path:
        """The WebAssembly module of a guest."""
        if guest == "python":
            return self.real_dir / "python.wasm"
        return self.wasm_dir / f"{guest}.wasm"

    def native(self, guest: str) -> Path:
        """The native binary built from the same C source."""
        return self.native_dir / guest

    def to_dict(self) -> dict[str, str]:
        """Plain data for the agent's start-up message."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Layout:
        """Inverse of `to_dict`."""
        return cls(**{k: Path(v) for k, v in data.items()})

    @classmethod
    def under(cls, build: Path | None = None) -> Layout:
        """The layout of a build directory (`guests/bench`, `native/bench`, `real`); None:
        the installed package's, or the checkout's `build/` (`stockade.guests`)."""
        from ...guests import build_root

        root = build if build is not None else build_root()
        return cls(root / "guests" / "bench", root / "native" / "bench", root / "real")

    def with_cached_python(self, workdir: Path) -> Layout:
        """This layout, or (when it has no `python.wasm`, as an installed wheel has not)
        one whose `real_dir` under `workdir` links the CPython for WASI that Stockade
        keeps in its cache (`stockade python` fetched it); the VM files stay reachable."""
        if self.wasm("python").exists():
            return self
        from ...cpython import python_module
        from ...errors import StockadeError

        try:
            cached = python_module(fetch=False)
        except StockadeError:
            return self
        real = workdir / "real"
        real.mkdir(parents=True, exist_ok=True)
        (real / "python.wasm").symlink_to(cached)
        vm = self.real_dir.parent / "vm"
        if vm.is_dir():
            (workdir / "vm").symlink_to(vm.resolve())
        return Layout(self.wasm_dir, self.native_dir, real)


@dataclass(frozen=True)
class Request:
    """One invocation: a guest name, its arguments, and a payload file for stdin (or None)."""

    guest: str
    args: tuple[str, ...] = ()
    stdin: str | None = None

    def payload(self) -> bytes:
        """The stdin payload (read outside the timed region by the hosts that need bytes)."""
        return Path(self.stdin).read_bytes() if self.stdin else b""


@dataclass
class Sample:
    """One timed invocation. Milliseconds for times, KiB for resident set size.

    `first_ms` is request-to-first-output (processes only); `cpu_ms` is user+system time;
    `rss_kb` the peak resident set of the process that ran the guest; `hot_ns` the guest's
    own timing of its hot loop; `digest` what must agree across backends.
    """

    wall_ms: float
    first_ms: float | None = None
    cpu_ms: float | None = None
    rss_kb: int | None = None
    hot_ns: int | None = None
    digest: str = ""
    ok: bool = True
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the wire and results.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        """Inverse of `to_dict`."""
        return cls(**data)


def finish_sample(started: float, cpu_started: float, stdout: bytes, stderr: bytes,
                  ok: bool, error: str = "") -> Sample:
    """A `Sample` for an in-process run started at `perf_counter()`/`process_time()` values."""
    wall = (time.perf_counter() - started) * 1000.0
    cpu = (time.process_time() - cpu_started) * 1000.0
    digest, hot = fingerprint(stdout, stderr)
    if not ok and not error:
        error = stderr[-300:].decode("utf-8", "replace").strip() or "guest failed"
    return Sample(wall_ms=wall, cpu_ms=cpu, hot_ns=hot, digest=digest, ok=ok, error=error)


class Host(ABC):
    """Runs requests for one backend. Construct with the layout and backend options;
    raise HostUnavailable from the constructor when the backend cannot run here."""

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        self.layout = layout
        self.options = options

    @abstractmethod
    def run(self, request: Request) -> Sample:
        """Run one invocation and time it."""

    def artifacts(self) -> dict[str, int]:
        """Sizes in bytes of artifacts this host produced (compiled code), by name."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most hosts hold nothing
        """Release workers, engines and temporary files. Safe to call twice."""
