"""`linear_memory_bytes`: the running guest's memory size, as this process maps it.

A worker whose process keeps the deadline (`isolate.overrun`) reports a run it stops
from another thread than the guest's, which must not touch the guest's store (wasmtime's
stores are not thread-safe), so the store cannot say how large the memory has grown.
The kernel can: every linear memory is a fixed reservation (`engine.config`:
`MEMORY_RESERVATION` plus `MEMORY_GUARD`, with a guard region before it) whose
accessible prefix, read-write, is exactly the memory's current size (wasm pages are
multiples of the host page; the memory never moves, and growing it only makes more of
the reservation read-write). `/proc/self/maps` is consistent under the kernel's lock,
so a memory growing meanwhile is seen before or after, never torn. The run records where
its memory lies (`RunState.memory_base`): other slots of the pool, which keep their last
size mapped when idle, are told apart by their address.
"""

from __future__ import annotations

from ..engine.config import MEMORY_GUARD, MEMORY_RESERVATION

__all__ = ["linear_memory_bytes", "linear_memories"]

_MAPS = "/proc/self/maps"


def linear_memories(maps: str) -> dict[int, int]:
    """The accessible sizes (bytes) of the linear memories, by address, that `maps` (the text of a
    `/proc/PID/maps`) shows: a read-write run of mappings (an image mapped from a memfd
    and anonymous pages alike) with an inaccessible guard right before it and, right
    after, the inaccessible rest of a reservation that makes the whole exactly
    `MEMORY_RESERVATION + MEMORY_GUARD`. A memory of size 0 is not told apart from the
    guard around it and is not listed."""
    slot = MEMORY_RESERVATION + MEMORY_GUARD
    found: dict[int, int] = {}
    previous_end = -1
    previous_none = False  # the mapping before the current read-write run is a guard
    run_start = run_end = -1  # the current read-write run, contiguous
    run_guarded = False
    for line in maps.splitlines():
        fields = line.split(maxsplit=2)
        if len(fields) < 2:
            continue
        start_text, _, end_text = fields[0].partition("-")
        try:
            start, end = int(start_text, 16), int(end_text, 16)
        except ValueError:
            continue
        perms = fields[1]
        none = perms.startswith("---")
        if perms.startswith("rw") and start == run_end:
            run_end = end  # the run goes on
        elif perms.startswith("rw"):
            run_start, run_end = start, end
            run_guarded = previous_none and previous_end == start
        else:
            # The kernel merges the rest with the next slots when they are unused too
            # (a pool's slots lie back to back).
            if none and run_guarded and start == run_end \
                    and ((run_end - run_start) + (end - start)) % slot == 0:
                found[run_start] = run_end - run_start
            run_start = run_end = -1
            run_guarded = False
        previous_end, previous_none = end, none
    return found


def linear_memory_bytes(base: int) -> int | None:
    """The size in bytes of the linear memory at address `base`, None when this process
    maps none there (or the maps cannot be read). Safe from any thread."""
    try:
        with open(_MAPS) as maps:
            return linear_memories(maps.read()).get(base)
    except OSError:
        return None
