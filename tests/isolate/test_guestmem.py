"""`linear_memory_bytes`: a running guest's memory size read from this process's own
mappings by its address, from another thread than the guest's (the worker's deadline
thread)."""

from __future__ import annotations

import subprocess
import sys

from stockade.engine.config import MEMORY_GUARD, MEMORY_RESERVATION
from stockade.isolate.guestmem import linear_memories
from tests.conftest import guest

# A C-API sandbox whose pool is shaped as a worker's (one instance, no tripwire page)
# runs the guest on a thread; the main thread asks the engine what a stop now would report
# (`FastEngine.overdue`, as the worker's deadline thread does) while it spins. Another
# module ran first: its pool slot keeps its memory mapped.
WATCH = """
import sys, threading, time
from stockade import Policy
from stockade.engine import EngineConfig
from stockade.isolate.guestmem import linear_memory_bytes
from stockade.sandbox.capi import CapiSandbox
policy = Policy.from_profile("default").with_limits(timeout=2.0, max_memory="8MiB")
config = EngineConfig.for_limits(policy.limits, tripwire=False)  # one memory, epochs
with CapiSandbox(policy, engine_config=config) as sandbox:
    sandbox.run(sys.argv[1])
    idle = sandbox.engine.overdue(0.0, 0.0, linear_memory_bytes)
    thread = threading.Thread(target=sandbox.run, args=(sys.argv[2],))
    thread.start()
    seen = None
    for _ in range(150):
        time.sleep(0.01)
        stopped = sandbox.engine.overdue(0.0, 0.0, linear_memory_bytes)
        seen = None if stopped is None else stopped.memory_bytes
        if seen == 65 * 65536:
            break
    thread.join()
print(idle, seen)
"""


def test_the_size_a_spinning_guest_grew_to_is_read_from_another_thread() -> None:
    done = subprocess.run([sys.executable, "-c", WATCH, str(guest("hello.wasm")),
                           str(guest("grow_then_spin.wasm"))],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    idle, seen = done.stdout.split()
    assert idle == "None"  # no run in progress
    assert int(seen) == 65 * 65536  # 1 page, grown by 64


def _line(start: int, size: int, perms: str, name: str = "") -> str:
    return f"{start:x}-{start + size:x} {perms} 00000000 00:00 0 {name}"


def test_only_a_guarded_reservation_of_the_memory_shape_counts() -> None:
    slot = MEMORY_RESERVATION + MEMORY_GUARD
    base = 0x7F0000000000
    image = 4096
    memory = [
        _line(base - MEMORY_GUARD, MEMORY_GUARD, "---p"),
        _line(base, image, "rw-p", "/memfd:wasm-memory-image (deleted)"),
        _line(base + image, 3 * 65536 - image, "rw-p"),
        _line(base + 3 * 65536, slot - 3 * 65536, "---p"),
    ]
    assert linear_memories("\n".join(memory)) == {base: 3 * 65536}
    # A malloc arena (read-write start, inaccessible rest, 64 MiB), a thread stack (its
    # guard before it), and a reservation without a guard before it: none is a memory.
    arena = 0x7E0000000000
    others = [
        _line(arena, 1 << 20, "rw-p"), _line(arena + (1 << 20), (63 << 20), "---p"),
        _line(arena + (64 << 20), 4096, "---p"), _line(arena + (64 << 20) + 4096, 8 << 20,
                                                       "rw-p"),
        _line(0x7D0000000000, 65536, "r--p"), _line(0x7D0000010000, 65536, "rw-p"),
        _line(0x7D0000020000, slot - 65536, "---p"),
    ]
    assert linear_memories("\n".join(others)) == {}
    # A memory of no pages: its guards merge; not told apart, not listed.
    assert linear_memories(_line(base - MEMORY_GUARD, MEMORY_GUARD + slot, "---p")) == {}
    # The rest of the slot merged with the pool's next slot, unused (a GC heap's): the
    # kernel shows one inaccessible mapping over both; the memory still counts, once.
    merged = [*memory[:3], _line(base + 3 * 65536, 2 * slot - 3 * 65536, "---p")]
    assert linear_memories("\n".join(merged)) == {base: 3 * 65536}
    # Not a whole number of slots: not a pool's memory.
    ragged = [*memory[:3], _line(base + 3 * 65536, slot + 4096 - 3 * 65536, "---p")]
    assert linear_memories("\n".join(ragged)) == {}
