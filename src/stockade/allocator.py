"""The C allocator's settings for the processes Stockade starts (glibc reads them from
the environment when a process starts, never later).

- `arena_limit`: at most two malloc arenas (unless `MALLOC_ARENA_MAX` is set). Each
  arena reserves 64 MiB of address space, which a child's `RLIMIT_AS` counts.
- `run_tunables`: a per-thread cache of 64 freed chunks per size class, not glibc's 7
  (`glibc.malloc.tcache_count`), for processes that run guests back to back. Every run
  makes and frees a wasmtime store, an instance and a WASI context: a few hundred
  small allocations, most of which overflow a cache of 7 into the arena's bins, whose
  consolidation then runs on the next large request. A fresh instance of the hello
  guest (the native run alone, 30,000 runs, median of 5 interleaved rounds) took
  ~13 µs of CPU with 64 against ~15-21 µs with 7; 256 and 1,000 did no better. The
  cache holds at most 64 classes x 64 chunks of up to 1,032 bytes: ~4 MiB a thread.
  A gateway worker inherits its supervisor's `GLIBC_TUNABLES` with it added (unless
  they size the cache themselves); an isolated worker, whose environment is an
  allow-list, gets this one tunable only (another could undo its arena limit).
"""

from __future__ import annotations

import os

__all__ = ["arena_limit", "run_tunables", "TCACHE_COUNT"]

TCACHE_COUNT = 64
_TCACHE = "glibc.malloc.tcache_count"


def arena_limit() -> dict[str, str]:
    """`MALLOC_ARENA_MAX` for a child: this process's, else 2."""
    return {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}


def run_tunables(inherited: bool = True) -> dict[str, str]:
    """`GLIBC_TUNABLES` for a child that runs guests: the larger per-thread cache, after
    this process's tunables when `inherited` (unless they size the cache already)."""
    given = os.environ.get("GLIBC_TUNABLES", "") if inherited else ""
    if any(item.partition("=")[0] == _TCACHE for item in given.split(":")):
        return {"GLIBC_TUNABLES": given}
    ours = f"{_TCACHE}={TCACHE_COUNT}"
    return {"GLIBC_TUNABLES": f"{given}:{ours}" if given else ours}
